#!/usr/bin/env bash
# A stand-in for a training script, in bash so that it runs in the tiny local test image.
# It behaves the way the executor expects a real trainer to:
#   - epochs of steps with a falling loss, printed as the job log's progress;
#   - one checkpoint per epoch, written to a temporary name and renamed when complete;
#   - resumes from the newest checkpoint when one exists;
#   - on SIGTERM (cancel, timeout), finishes the step, writes a checkpoint and exits 143.
set -euo pipefail

epochs="${EPOCHS:-3}"
steps_per_epoch="${STEPS_PER_EPOCH:-5}"
step_seconds="${STEP_SECONDS:-0.2}"
checkpoint_dir="${CHECKPOINT_DIR:-checkpoints}"
mkdir -p "$checkpoint_dir"

stop_requested=0
trap 'stop_requested=1' TERM

# The "model": a loss in fixed point (1e-4 units), shrinking by 15% a step. A checkpoint holds
# the loss and the last step done, so a run stopped mid-epoch resumes at the next step.
loss=25000
first_epoch=1
first_step=1
if [[ -f "$checkpoint_dir/latest" ]]; then
  latest="$(<"$checkpoint_dir/latest")"
  read -r loss done_steps < "$checkpoint_dir/epoch-$latest.ckpt"
  if ((done_steps < steps_per_epoch)); then
    first_epoch=$latest first_step=$((done_steps + 1))
  else
    first_epoch=$((latest + 1))
  fi
  echo "Resuming from checkpoint epoch-$latest after step $done_steps (loss $((loss / 10000)).$(printf '%04d' $((loss % 10000))))"
fi

save_checkpoint() {
  local epoch="$1" steps_done="$2"
  printf '%s %s\n' "$loss" "$steps_done" > "$checkpoint_dir/epoch-$epoch.ckpt.tmp"
  mv "$checkpoint_dir/epoch-$epoch.ckpt.tmp" "$checkpoint_dir/epoch-$epoch.ckpt"
  printf '%s\n' "$epoch" > "$checkpoint_dir/latest.tmp"
  mv "$checkpoint_dir/latest.tmp" "$checkpoint_dir/latest"
  echo "  checkpoint saved: $checkpoint_dir/epoch-$epoch.ckpt"
}

echo "Training on ${CUDA_VISIBLE_DEVICES:-no GPUs (CPU host)}: epochs $first_epoch..$epochs, $steps_per_epoch steps each"
for ((epoch = first_epoch; epoch <= epochs; epoch++)); do
  for ((step = (epoch == first_epoch ? first_step : 1); step <= steps_per_epoch; step++)); do
    # SIGTERM also reaches sleep; errexit must not end the script before it checkpoints.
    sleep "$step_seconds" || true
    loss=$((loss * 85 / 100))
    printf 'epoch %d/%d step %d/%d loss %d.%04d\n' "$epoch" "$epochs" "$step" "$steps_per_epoch" $((loss / 10000)) $((loss % 10000))
    if ((stop_requested)); then
      echo "SIGTERM received: saving a checkpoint before stopping"
      save_checkpoint "$epoch" "$step"
      exit 143
    fi
  done
  save_checkpoint "$epoch" "$steps_per_epoch"
done
echo "Training complete."
