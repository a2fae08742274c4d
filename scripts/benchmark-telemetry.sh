#!/usr/bin/env bash
# Benchmark of issue 17, what GPU telemetry costs the host: a job holding 2 GPUs for SECONDS
# (default 60) on the test bed, sampled every second (ten times the default rate, so that the
# cost is measurable), with a fake nvidia-smi (a bash script printing a recorded answer: no GPU
# here). From /proc, the sampler process's own CPU time and that of the nvidia-smi calls it
# waited for, over the job's middle; reported per sample and per hour of job at the default
# interval (10 s), against an hour of one core.
#   scripts/benchmark-telemetry.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-60}"

source scripts/with-testbed.sh "${GPU_EXECUTOR_BENCHMARK_DIR:-/tmp/gpu-executor-benchmark-telemetry}" 4577
binary="$PWD/$(scripts/publish.sh)"
work="$(mktemp -d)"
trap 'scripts/testbed.sh leftovers "$binary" 60 || true; rm -rf "$work" || true; scripts/testbed.sh stop' EXIT
job_id=990017

printf '0, GPU-b0, NVIDIA L4, 23034, 0, 0, [N/A]\n1, GPU-b1, NVIDIA L4, 23034, 0, 0, [N/A]\n' > "$work/query.txt"
cat > "$work/nvidia-smi" <<SH
#!/bin/bash
case "\$*" in
  *topo*) printf '\tGPU0\tGPU1\nGPU0\t X \tPHB\nGPU1\tPHB\t X \n' ;;
  *utilization.memory*) printf '0, GPU-b0, 97, 40, 20480, 301.5, 71, 1980\n1, GPU-b1, 95, 38, 20400, 298.0, 70, 1980\n' ;;
  *) cat '$work/query.txt' ;;
esac
SH
chmod +x "$work/nvidia-smi"
{ testbed_executor_config "$work"; printf 'nvidia_smi = "%s"\n[telemetry]\ngpu_sample_seconds = 1\n' "$work/nvidia-smi"; } > "$work/config.toml"
printf '{"job_id": %d, "variables": {"GPU_COUNT": "2"}, "script": ["sleep %d"]}\n' "$job_id" "$seconds" > "$work/job.json"

"$binary" --config "$work/config.toml" simulate "$work/job.json" > "$work/job.log" 2>&1 &
simulation=$!
sampler=""
for _ in $(seq 1 100); do
  sampler="$(pgrep -f "gpus sample $job_id\$" | head -n 1 || true)"
  [ -n "$sampler" ] && break
  sleep 0.2
done
[ -n "$sampler" ] || { echo "benchmark-telemetry: no sampler started; the job's log:" >&2; cat "$work/job.log" >&2; exit 1; }
csv="$work/state/telemetry/job-$job_id/gpu.csv"
snapshot() { # "OWN_TICKS CHILD_TICKS SAMPLE_LINES EPOCH"
  local stat
  stat="$(sed 's/^.*) //' "/proc/$sampler/stat")"
  set -- $stat
  echo "$((${12} + ${13})) $((${14} + ${15})) $(($(wc -l < "$csv") - 1)) $(date +%s.%N)"
}
sleep 5
before="$(snapshot)"
sleep $((seconds - 15))
after="$(snapshot)"
wait "$simulation" || { cat "$work/job.log" >&2; exit 1; }

python3 - "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import sys
b = [float(x) for x in sys.argv[1].split()]
a = [float(x) for x in sys.argv[2].split()]
ticks = float(sys.argv[3])
own, children, samples, wall = (a[0] - b[0]) / ticks, (a[1] - b[1]) / ticks, a[2] - b[2], a[3] - b[3]
calls = samples / 2  # one nvidia-smi call samples both GPUs
per_call_own, per_call_children = own / calls, children / calls
hourly_calls = 3600 / 10
print(f"sampler, {calls:.0f} calls in {wall:.0f} s: own CPU {own*1000:.0f} ms ({per_call_own*1000:.2f} ms per call), "
      f"fake nvidia-smi {children*1000:.0f} ms ({per_call_children*1000:.2f} ms per call)")
print(f"per hour of job at the default 10 s: {per_call_own*hourly_calls:.2f} s of CPU for the sampler itself "
      f"({per_call_own*hourly_calls/3600*100:.3f}% of one core), plus nvidia-smi's own cost per call x 360")
PY
