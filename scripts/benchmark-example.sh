#!/usr/bin/env bash
# Benchmark of issue 15, the ML engineer's path: what the PyTorch example costs on this machine.
#   - the example image (scripts/build-example-image.sh): its size, and its build time cold (an
#     empty cache and a daemon without it) against cached (the same inputs again);
#   - the epoch time of examples/pytorch/train.py on these cores (torch's one thread), trained
#     through gpu-executor (a checkpointed job of the simulator, its agent committing a checkpoint
#     every second) against the same trainer saving the same checkpoints every second in a plain
#     `docker run` of the same image, in the same run: the ratio is what the executor (its agent's
#     commits, the job log's streaming) costs the training.
#   scripts/benchmark-example.sh [EPOCHS]
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-40}"

source scripts/with-testbed.sh "${GPU_EXECUTOR_BENCHMARK_DIR:-/tmp/gpu-executor-benchmark-example}" 4576
binary="$PWD/$(scripts/publish.sh)"
work="$(mktemp -d)"
trap 'scripts/testbed.sh leftovers "$binary" 60 || true; rm -rf "$work" || true; scripts/testbed.sh stop' EXIT

echo "== the example image, cold: an empty cache, and the image not in this daemon" >&2
export GPU_EXECUTOR_EXAMPLE_IMAGE_CACHE="$work/image-cache"
docker image ls --quiet gpu-executor-examples/pytorch | sort -u | xargs --no-run-if-empty docker image rm --force >/dev/null
started=$(date +%s.%N)
image="$(scripts/build-example-image.sh)"
cold=$(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { print a - b }')
started=$(date +%s.%N)
scripts/build-example-image.sh >/dev/null
cached=$(awk -v a="$(date +%s.%N)" -v b="$started" 'BEGIN { print a - b }')
size_mib=$(docker image inspect --format '{{.Size}}' "$image" | awk '{ printf "%.0f", $1 / 1048576 }')

mkdir -p "$work/store/datasets/digits" "$work/sources"
docker run --rm -v "$PWD/examples/pytorch:/example:ro" -v "$work/store/datasets/digits:/out" "$image" python3 /example/export_digits.py /out/digits.npz >&2
cp examples/pytorch/*.py "$work/sources/"

# Median of the per-epoch seconds a trainer printed ("epoch N done: ... (S s)").
median_epoch() { grep -o 'epoch [0-9]* done: .* (\([0-9.]*\) s)' "$1" | sed 's/.*(\([0-9.]*\) s)/\1/' | sort -n | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

echo "== $epochs epochs in a plain docker run, saving a checkpoint every second" >&2
mkdir -p "$work/plain-checkpoints"
docker run --rm -v "$work/sources:/src:ro" -v "$work/store/datasets/digits:/data/digits:ro" -v "$work/plain-checkpoints:/checkpoints" \
  -e EPOCHS="$epochs" -e MODEL_DIR=/tmp/model -e CHECKPOINT_DIR=/checkpoints -e CHECKPOINT_MARKER=/checkpoints/.complete -e CHECKPOINT_EVERY_SECONDS=1 \
  -w /src "$image" python3 train.py > "$work/plain.log"

echo "== $epochs epochs through gpu-executor, a checkpoint committed every second" >&2
{ testbed_executor_config "$work"; cat <<TOML
[stores.s3]
type = "file"
root = "$work/store"
allow = ["datasets"]
TOML
} > "$work/config.toml"
sed -i 's#^allowed = \["gpu-executor-test/\*"\]#allowed = ["gpu-executor-test/*", "gpu-executor-examples/*"]#' "$work/config.toml"
python3 - "$work/job.json" "$image" "$epochs" <<'PY'
import json, sys
path, image, epochs = sys.argv[1:]
json.dump({"job_id": 4242, "name": "train", "image": image, "sources": "sources", "timeout": 3600,
           "variables": {"DATASETS": "s3://datasets/digits/ -> /data/digits", "CHECKPOINTS": "on", "CHECKPOINT_EVERY_SECONDS": "1", "EPOCHS": epochs},
           "script": ["python3 train.py"]}, open(path, "w"))
PY
"$binary" --config "$work/config.toml" simulate "$work/job.json" > "$work/executor.log" 2>&1 || { cat "$work/executor.log" >&2; exit 1; }
commits=$(grep -c '^Checkpoint generation [0-9]* committed' "$work/executor.log" || true)

plain=$(median_epoch "$work/plain.log")
executor=$(median_epoch "$work/executor.log")
echo
echo "example image $image: $size_mib MiB"
echo "build: cold $(printf '%.1f' "$cold") s, cached $(printf '%.2f' "$cached") s: cached/cold $(awk -v a="$cached" -v b="$cold" 'BEGIN { printf "%.4f", a / b }')"
echo "epoch (median of $epochs): gpu-executor $executor s ($commits commits), plain docker run $plain s: ratio $(awk -v a="$executor" -v b="$plain" 'BEGIN { printf "%.3f", a / b }')"
