#!/usr/bin/env bash
# A trainer whose save on the stop signal takes its time, as one writing large weights does.
# It prints the SHA-256 of what it saved, which the tests compare with the store and the resume.
#   SAVE_MODE=marker (default): a small marked checkpoint every 2 s; on the signal it sleeps 3 s,
#     writes WEIGHTS_MB of weights under a temporary name, renames them into place, creates the
#     marker and exits.
#   SAVE_MODE=torn: never creates a marker. It writes its weights once (the quiet rule commits
#     them), and on the signal starts rewriting them in place and never finishes, ignoring the
#     signal, so the stop SIGKILLs it with a torn file on disk.
#   RESUME_ONLY=1: prints what was restored, and exits.
set -uo pipefail

dir="${CHECKPOINT_DIR:?CHECKPOINT_DIR is not set: run with CHECKPOINTS=on}"
marker="${CHECKPOINT_MARKER:?}"
weights_mb="${WEIGHTS_MB:-150}"
hash_of() { local sum; sum="$(sha256sum < "$1")"; echo "${sum%% *}"; }

if [[ -f $dir/weights.bin ]]; then
  echo "resumed with weights sha256 $(hash_of "$dir/weights.bin") (generation ${CHECKPOINT_RESTORED_GENERATION:-none})"
else
  echo "resumed with no weights"
fi
[[ ${RESUME_ONLY:-0} == 1 ]] && exit 0

signalled=0
trap 'signalled=1' TERM
step=0
case "${SAVE_MODE:-marker}" in
  marker)
    while ((!signalled)); do
      sleep 0.2
      step=$((step + 1))
      if ((step % 10 == 0)); then
        echo "step=$step" > "$dir/state.txt.tmp"
        mv "$dir/state.txt.tmp" "$dir/state.txt"
        : > "$marker"
        echo "periodic save at step $step"
      fi
    done
    echo "signal received at step $step: saving the weights in 3 s"
    sleep 3
    head -c $((weights_mb * 1048576)) /dev/urandom > "$dir/weights.bin.tmp"
    mv "$dir/weights.bin.tmp" "$dir/weights.bin"
    echo "step=$step" > "$dir/state.txt.tmp"
    mv "$dir/state.txt.tmp" "$dir/state.txt"
    : > "$marker"
    echo "saved on the signal: weights sha256 $(hash_of "$dir/weights.bin")"
    exit 0
    ;;
  torn)
    head -c $((weights_mb * 1048576)) /dev/urandom > "$dir/weights.bin"
    echo "wrote weights sha256 $(hash_of "$dir/weights.bin")"
    while ((!signalled)); do sleep 0.2; done
    trap '' TERM
    echo "signal received: rewriting the weights in place, and not stopping"
    : > "$dir/weights.bin"
    while :; do
      head -c 65536 /dev/urandom >> "$dir/weights.bin"
      sleep 0.2
    done
    ;;
esac
