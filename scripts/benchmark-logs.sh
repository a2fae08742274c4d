#!/usr/bin/env bash
# Benchmark of issue 17, whole logs: a job's step prints MIB MiB (default 200) of 100-byte lines,
# through the simulator on the test bed with logs.job_log_budget = 1 MiB (so nearly all of it goes
# through the throttled view and to the host file). Reports the stage's wall time against the
# same output printed by a plain `docker run` of the same image into /dev/null, in the same run,
# and the peak RSS of the `run` process that streamed it (from the admin log) against the
# quiet stages of the same job, and its CPU time. On a machine of few cores the generator, dockerd
# and the executor share them: the CPU time says what the executor itself costs.
#   scripts/benchmark-logs.sh [MIB]
# GPU_EXECUTOR_BENCHMARK_LOG_BUDGET (bytes) sets another budget: a huge one passes everything
# through live, which separates the throttled view's cost from the streaming's.
set -euo pipefail
cd "$(dirname "$0")/.."
mib="${1:-200}"

source scripts/with-testbed.sh "${GPU_EXECUTOR_BENCHMARK_DIR:-/tmp/gpu-executor-benchmark-logs}" 4578
binary="$PWD/$(scripts/publish.sh)"
work="$(mktemp -d)"
trap 'scripts/testbed.sh leftovers "$binary" 60 || true; rm -rf "$work" || true; scripts/testbed.sh stop' EXIT
job_id=990117
lines=$((mib * 10485760 / 1000))
trainer="awk 'BEGIN { for (i = 1; i <= $lines; i++) printf \"step %010d %083d\\n\", i, 0 }'"

{ testbed_executor_config "$work"; printf '[logs]\njob_log_budget = %s\n' "${GPU_EXECUTOR_BENCHMARK_LOG_BUDGET:-1048576}"; } > "$work/config.toml"
python3 - "$job_id" "$trainer" > "$work/job.json" <<'PY'
import json, sys
print(json.dumps({"job_id": int(sys.argv[1]), "script": [sys.argv[2]]}))
PY

start=$(date +%s.%N)
docker run --rm --network none "$GPU_EXECUTOR_TEST_IMAGE" bash -c "$trainer" > /dev/null
plain=$(python3 -c "import time,sys; print(time.time() - float(sys.argv[1]))" "$start")

"$binary" --config "$work/config.toml" simulate "$work/job.json" > "$work/job.log" 2>&1 || { tail -50 "$work/job.log" >&2; exit 1; }
"$binary" --config "$work/config.toml" events --job "$job_id" --json > "$work/events.json"
python3 - "$work/events.json" "$plain" "$mib" "${GPU_EXECUTOR_BENCHMARK_LOG_BUDGET:-1048576}" <<'PY'
import json, sys
runs = [json.loads(line) for line in open(sys.argv[1]) if json.loads(line)["verb"] == "run"]
loud = max(runs, key=lambda event: event["duration_ms"])
quiet = max(event["peak_rss_kib"] for event in runs if event is not loud)
plain, mib, budget = float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
seconds = loud["duration_ms"] / 1000
print(f"{mib} MiB printed by a step: {seconds:.1f} s through gpu-executor ({mib / seconds:.0f} MiB/s, whole log kept and compressed, job log budget {budget / 1048576:g} MiB) "
      f"against {plain:.1f} s in a plain docker run into /dev/null: {seconds / plain:.2f}x")
print(f"the run verb streaming it: {loud['cpu_ms'] / 1000:.1f} s of CPU ({loud['cpu_ms'] / 1000 / mib * 1024:.1f} s per GiB); "
      f"peak RSS {loud['peak_rss_kib'] / 1024:.1f} MiB, against {quiet / 1024:.1f} MiB for the job's quiet stages")
PY
