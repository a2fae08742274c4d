#!/usr/bin/env bash
# Benchmark of issue 3, on the local test bed with a fake nvidia-smi (gpus.mode = "none"):
#   1. the cost of an allocation decision: prepare for a job wanting 4 of 8 GPUs against the same
#      prepare wanting none, with 50 managed containers on the daemon (median difference);
#   2. throughput under contention: jobs of 1 s each, 1 GPU each, on a 2-GPU host, against the
#      ideal of 2 GPUs x 60 jobs a minute.
#   scripts/benchmark-gpus.sh [RUNS] [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-15}"
jobs="${2:-12}"

source scripts/with-testbed.sh "${GPU_EXECUTOR_BENCHMARK_DIR:-/tmp/gpu-executor-benchmark}" 4571
binary="$PWD/$(scripts/publish.sh)"
fixtures="$PWD/tests/GpuExecutor.Tests/Fixtures/nvidia-smi"
work="$(mktemp -d)"
trap 'docker --host "$DOCKER_HOST" rm -f $(docker --host "$DOCKER_HOST" ps -aq --filter label=gpu-executor-benchmark=filler) >/dev/null 2>&1 || true; rm -rf "$work"; scripts/testbed.sh stop' EXIT

# The fake answers as slowly as the real driver did: the medians of five calls recorded live on
# an H200 (tests/GpuExecutor.Tests/Fixtures/nvidia-smi/h200-1.live.check.log; an H100 took
# 25-38 ms and 46-112 ms). NVIDIA_SMI_LATENCY_MS="0 0" gives the bare fake.
read -r query_ms topo_ms <<< "${NVIDIA_SMI_LATENCY_MS:-24 39}"
fake_nvidia_smi() { # QUERY TOPO -> path of a script printing them
  local dir="$work/nvidia-smi-$(basename "$1" .query.txt)"
  mkdir -p "$dir"
  printf '#!/bin/bash\nif [ "$1" = topo ]; then sleep %s; cat %q; else sleep %s; cat %q; fi\n' \
    "$(printf '0.%03d' "$topo_ms")" "$2" "$(printf '0.%03d' "$query_ms")" "$1" > "$dir/nvidia-smi"
  chmod +x "$dir/nvidia-smi"
  echo "$dir/nvidia-smi"
}

write_config() { # PATH NVIDIA_SMI
  cat > "$1" <<TOML
state_dir = "$work/state"
[docker]
endpoint = "$DOCKER_HOST"
[images]
allowed = ["gpu-executor-test/*"]
pull_policy = "never"
default = "$GPU_EXECUTOR_TEST_IMAGE"
[builds]
host_dir = "$work/builds"
[cache]
host_dir = "$work/cache"
[gpus]
mode = "none"
nvidia_smi = "$2"
wait_timeout_seconds = 600
TOML
}

write_payload() { # PATH JOB_ID GPU_COUNT
  cat > "$1" <<JSON
{"id": $2, "job_info": {"name": "bench", "project_id": 1, "project_full_path": "bench/bench", "pipeline_id": 1},
 "git_info": {"ref": "main"}, "runner_info": {"timeout": 3600}, "image": {"name": "$GPU_EXECUTOR_TEST_IMAGE"},
 "variables": [{"key": "GPU_COUNT", "value": "$3"}]}
JSON
}

echo "== 1. decision cost: 8 x H100 (NVSwitch topology), 50 managed containers, nvidia-smi answering in ${query_ms}/${topo_ms} ms" >&2
write_config "$work/h100.toml" "$(fake_nvidia_smi "$fixtures/h100-8.query.txt" "$fixtures/h100-8.topo.txt")"
for i in $(seq 1 50); do
  docker --host "$DOCKER_HOST" create --label gpu-executor-benchmark=filler --label io.gpu-executor.managed=true \
    --label io.gpu-executor.job.id=$((800000 + i)) "$GPU_EXECUTOR_TEST_IMAGE" true >/dev/null
done
write_payload "$work/none.json" 990101 0
write_payload "$work/four.json" 990102 4
export BUILD_FAILURE_EXIT_CODE=1 SYSTEM_FAILURE_EXIT_CODE=2 TMPDIR="$work"
hyperfine -N --warmup 2 --runs "$runs" --export-json "$work/decision.json" \
  --prepare "env JOB_RESPONSE_FILE=$work/none.json $binary --config $work/h100.toml cleanup" \
  -n "prepare, GPU_COUNT=0" "env JOB_RESPONSE_FILE=$work/none.json $binary --config $work/h100.toml prepare" \
  --prepare "env JOB_RESPONSE_FILE=$work/four.json $binary --config $work/h100.toml cleanup" \
  -n "prepare, GPU_COUNT=4 of 8" "env JOB_RESPONSE_FILE=$work/four.json $binary --config $work/h100.toml prepare" \
  --prepare "sh -c 'env JOB_RESPONSE_FILE=$work/four.json $binary --config $work/h100.toml cleanup; rm -f $work/state/gpus/nvidia-smi-topo.txt'" \
  -n "prepare, GPU_COUNT=4 of 8, no topology cache" "env JOB_RESPONSE_FILE=$work/four.json $binary --config $work/h100.toml prepare" >&2
JOB_RESPONSE_FILE="$work/four.json" "$binary" --config "$work/h100.toml" cleanup >/dev/null 2>&1 || true

echo "== 2. throughput: $jobs jobs of 1 s, 1 GPU each, on 2 x A100 (fake nvidia-smi)" >&2
write_config "$work/l4.toml" "$(fake_nvidia_smi "$fixtures/a100-2.query.txt" "$fixtures/mixed-pcie-4.topo.txt")"
cat > "$work/job.json" <<JSON
{"image": "$GPU_EXECUTOR_TEST_IMAGE", "variables": {"GPU_COUNT": "1"}, "script": ["sleep 1"]}
JSON
started=$(date +%s.%N)
pids=()
for i in $(seq 1 "$jobs"); do
  "$binary" --config "$work/l4.toml" simulate "$work/job.json" --job-id $((990200 + i)) --result "$work/result-$i.json" >"$work/log-$i.txt" 2>&1 &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
finished=$(date +%s.%N)

python3 - "$work/decision.json" "$started" "$finished" "$jobs" "$failed" <<'PY'
import json, sys
results = json.load(open(sys.argv[1]))["results"]
none, four, uncached = results[0]["median"], results[1]["median"], results[2]["median"]
print(f"decision: prepare median {none*1000:.1f} ms without GPUs, {four*1000:.1f} ms with 4 of 8; the allocation adds {(four-none)*1000:.1f} ms (target < 50 ms)")
print(f"decision without the topology cache: {uncached*1000:.1f} ms, adds {(uncached-none)*1000:.1f} ms")
elapsed = float(sys.argv[3]) - float(sys.argv[2])
jobs, failed = int(sys.argv[4]), int(sys.argv[5])
per_minute = jobs / elapsed * 60
ideal = 2 * 60 / 1.0
print(f"throughput: {jobs} jobs ({failed} failed) in {elapsed:.1f} s = {per_minute:.1f} jobs/min; ideal for 2 GPUs and 1 s jobs {ideal:.0f} jobs/min; ratio {per_minute/ideal:.2f}")
PY
