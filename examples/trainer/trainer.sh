#!/usr/bin/env bash
# The reference trainer: trains by counting steps, and checkpoints the way gpu-executor expects
# a real trainer to (CHECKPOINTS: "on" gives it CHECKPOINT_DIR and CHECKPOINT_MARKER):
#   - every CHECKPOINT_EVERY_SECONDS (and on SIGTERM) it writes its step counter to a temporary
#     name, renames it into place, then touches the marker: "this checkpoint is complete";
#   - with CHECKPOINT_ONLY_ON_SIGNAL=1 it checkpoints only when signalled (the deadline test);
#   - it resumes from the restored checkpoint, and fails (exit 3) if that checkpoint is corrupt;
#   - CHECKPOINT_WEIGHTS_MB adds a weights file of that size to each checkpoint, rewritten in
#     place every time, as torch.save does with "last.pt".
#   - STEP_TIMELINE, a file name, gets one "N TIME" line per step as well, and "N TIME checkpoint"
#     for each checkpoint, written before the marker (so no checkpoint the agent could commit is
#     missing from it): a record of this trainer that outlives its container, its job log and a
#     job log's lag behind it (the long-run test reads it).
# It prints "resumed at step N" and "step N" lines that the tests read. Bash only, so it runs in
# the tiny local test image.
set -uo pipefail

dir="${CHECKPOINT_DIR:?CHECKPOINT_DIR is not set: run with CHECKPOINTS=on}"
marker="${CHECKPOINT_MARKER:?}"
total_steps="${TOTAL_STEPS:-100}"
step_seconds="${STEP_SECONDS:-0.1}"
every="${CHECKPOINT_EVERY_SECONDS:-2}"
only_on_signal="${CHECKPOINT_ONLY_ON_SIGNAL:-0}"
weights_mb="${CHECKPOINT_WEIGHTS_MB:-0}"
timeline="${STEP_TIMELINE:-}"

# A checkpoint is "step=N check=C" with C derived from N: a torn or edited file is detected.
check_of() { echo $(( ($1 * 2654435761 + 12345) % 4294967296 )); }

step=0
if [[ -f "$dir/counter.ckpt" ]]; then
  line="$(<"$dir/counter.ckpt")"
  if [[ ! $line =~ ^step=([0-9]+)\ check=([0-9]+)$ ]] || [[ ${BASH_REMATCH[2]} != "$(check_of "${BASH_REMATCH[1]}")" ]]; then
    echo "corrupt checkpoint: '$line'" >&2
    exit 3
  fi
  step="${BASH_REMATCH[1]}"
fi
echo "resumed at step $step (generation ${CHECKPOINT_RESTORED_GENERATION:-none}, from job ${CHECKPOINT_RESTORED_FROM_JOB:-none})"

save() {
  if ((weights_mb > 0)); then
    # In place, like torch.save on a fixed name: the agent's snapshot must not tear it.
    head -c $((weights_mb * 1048576)) /dev/urandom > "$dir/weights.bin"
  fi
  echo "step=$step check=$(check_of "$step")" > "$dir/counter.ckpt.tmp"
  mv "$dir/counter.ckpt.tmp" "$dir/counter.ckpt"
  [[ -n $timeline ]] && echo "$step ${EPOCHREALTIME:-$SECONDS} checkpoint" >> "$timeline"
  : > "$marker"
  echo "checkpoint at step $step"
}

stop=0
trap 'stop=1' TERM USR1
last_save=$SECONDS
while ((step < total_steps)); do
  sleep "$step_seconds" || true
  step=$((step + 1))
  # bash's own clock: busybox date (the test image's) has no %N.
  echo "step $step ${EPOCHREALTIME:-$SECONDS}"
  [[ -n $timeline ]] && echo "$step ${EPOCHREALTIME:-$SECONDS}" >> "$timeline"
  if ((stop)); then
    save
    echo "signalled: checkpoint saved at step $step, exiting"
    exit 143
  fi
  if ((!only_on_signal && SECONDS - last_save >= every)); then
    save
    last_save=$SECONDS
  fi
done
save
echo "training complete at step $step"
