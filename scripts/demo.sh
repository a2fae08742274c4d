#!/usr/bin/env bash
# The demo: a training-style job (examples/train-job) driven through gpu-executor by the
# runner simulator, on a private local dockerd, exactly as GitLab Runner would drive it.
# Sets up everything a fresh machine lacks, and stops the daemon afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

# A daemon of its own, so the demo and a test run can share the machine.
source scripts/with-testbed.sh "${GPU_EXECUTOR_DEMO_DIR:-/tmp/gpu-executor-demo}" 4569

echo "== publishing gpu-executor (NativeAOT)" >&2
binary="$PWD/$(scripts/publish.sh)"

work="$GPU_EXECUTOR_TESTBED_DIR/demo"
mkdir -p "$work"
cat > "$work/config.toml" <<TOML
# Written by scripts/demo.sh: the local test bed stands in for a GPU host.
state_dir = "$work/state"
[docker]
endpoint = "$DOCKER_HOST"
[images]
default = "$GPU_EXECUTOR_TEST_IMAGE"
allowed = ["gpu-executor-test/*"]
pull_policy = "never"
helper = "$GPU_EXECUTOR_TEST_IMAGE"
[builds]
host_dir = "$work/builds"
container_dir = "/builds"
[cache]
host_dir = "$work/cache"
container_dir = "/cache"
[container]
shm_size = "256m"
[run]
stop_grace_seconds = 10
[cleanup]
remove_builds_dir = false
TOML

echo "== gpu-executor simulate examples/train-job/job.json" >&2
status=0
"$binary" --config "$work/config.toml" simulate examples/train-job/job.json --result "$work/result.json" "$@" || status=$?
echo
echo "The job's files stay on the host under $work/builds; the simulator's record is $work/result.json."
[ "$status" -eq 0 ] || exit "$status"

# A run interrupted and resumed: the reference trainer checkpoints every second; the first job is
# cancelled after 4 s (the trainer saves on the signal), the second job of the same run resumes
# from that checkpoint. A fresh run each demo: earlier demos' checkpoints are removed first.
rm -rf "$work/state/checkpoints" "$work/state/checkpoint-store"
echo >&2
echo "== a checkpointed run, cancelled after 4 s: simulate examples/trainer/job.json --cancel-after 4" >&2
cancelled=0
"$binary" --config "$work/config.toml" simulate examples/trainer/job.json --cancel-after 4 --graceful-kill-timeout 200 || cancelled=$?
# The simulator exits 3 for a cancelled job: that is the point here.
[ "$cancelled" -eq 3 ] || { echo "expected the first segment to be cancelled (3), got $cancelled" >&2; exit 1; }
echo >&2
echo "== the next job of the same run resumes from the last checkpoint" >&2
"$binary" --config "$work/config.toml" simulate examples/trainer/job.json || status=$?
echo
"$binary" --config "$work/config.toml" checkpoints list

# The ML engineer's path: the example MLOps pipeline (examples/mlops/.gitlab-ci.yml, built from
# the CI components in templates/) with real PyTorch, played job by job on this runner. The
# training is cancelled mid-epoch, the pipeline's retry resumes it, and its weights are compared
# with a run that was never interrupted.
echo >&2
echo "== the MLOps pipeline: building the PyTorch example image from Debian's packages (cached)" >&2
scripts/build-example-image.sh >/dev/null
store="$work/store"
rm -rf "$store" "$work/repository" "$work/state/checkpoints" "$work/state/checkpoint-store"
mkdir -p "$store/datasets/digits" "$work/repository/examples/pytorch"
cp examples/pytorch/*.py "$work/repository/examples/pytorch/"
# The dataset: scikit-learn's digits, as the package ships them, in the built-in local store
# (named s3 here, so the pipeline's s3:// dataset line needs no change; a real runner points it at S3).
docker run --rm -v "$PWD/examples/pytorch:/example:ro" -v "$store/datasets/digits:/out" gpu-executor-examples/pytorch:latest \
  python3 /example/export_digits.py /out/digits.npz >&2
cat >> "$work/config.toml" <<TOML
[stores.s3]
type = "file"
root = "$store"
allow = ["datasets"]
TOML
sed -i 's#^allowed = \["gpu-executor-test/\*"\]#allowed = ["gpu-executor-test/*", "gpu-executor-examples/*"]#' "$work/config.toml"
pipeline=(simulate-pipeline examples/mlops/.gitlab-ci.yml --sources "$work/repository"
  # This machine has no GPU; each batch is slowed down so that the cancel lands mid-epoch.
  --variable GPU_COUNT=0 --variable BATCH_SLEEP_SECONDS=0.05)
echo "== the pipeline, its training cancelled after 8 s" >&2
"$binary" --config "$work/config.toml" "${pipeline[@]}" --first-job-id 2000 --cancel train=8 || true
echo >&2
echo "== the pipeline again (GitLab's retry): the training resumes where the cancel saved it" >&2
"$binary" --config "$work/config.toml" "${pipeline[@]}" --first-job-id 2100 | tee "$work/pipeline.log" || status=1
echo >&2
echo "== the same training never interrupted, for comparison" >&2
"$binary" --config "$work/config.toml" "${pipeline[@]}" --first-job-id 2200 --variable CHECKPOINT_RUN_KEY=digits-uninterrupted > "$work/uninterrupted.log" || status=1
resumed="$(grep -o 'state_dict sha256 [0-9a-f]*' "$work/pipeline.log" | tail -1)"
straight="$(grep -o 'state_dict sha256 [0-9a-f]*' "$work/uninterrupted.log" | tail -1)"
echo
grep -o 'resumed at epoch [0-9]* batch [0-9]*' "$work/pipeline.log" | head -1 || true
grep -o 'training complete: accuracy [0-9.]*' "$work/pipeline.log" | tail -1 || true
echo "resumed run:       $resumed"
echo "uninterrupted run: $straight"
if [ -n "$resumed" ] && [ "$resumed" = "$straight" ]; then
  echo "The resumed weights equal the uninterrupted run's, bit for bit."
else
  echo "FAILED: the resumed weights differ from the uninterrupted run's." >&2
  status=1
fi
# The agents end once their jobs' containers are gone: wait for them before dockerd stops, and
# leave no gpu-executor process behind.
GPU_EXECUTOR_TESTBED_DIR="$GPU_EXECUTOR_TESTBED_DIR" scripts/testbed.sh leftovers "$binary" 60 || status=1
exit "$status"
