#!/usr/bin/env bash
# Evaluates the newest checkpoint: fails the job if the loss did not fall below a threshold.
set -euo pipefail
checkpoint_dir="${CHECKPOINT_DIR:-checkpoints}"
latest="$(<"$checkpoint_dir/latest")"
read -r loss _ < "$checkpoint_dir/epoch-$latest.ckpt"
threshold="${MAX_LOSS:-5000}"
echo "epoch-$latest loss $((loss / 10000)).$(printf '%04d' $((loss % 10000))) (threshold $((threshold / 10000)).$(printf '%04d' $((threshold % 10000))))"
if ((loss > threshold)); then
  echo "the model did not converge" >&2
  exit 3
fi
echo "evaluation passed"
