#!/usr/bin/env bash
# Benchmark of issue 2: the per-stage cost of `gpu-executor run` against the docs-style
# reference executor (scripts/reference-executor.sh: `docker exec -i CONTAINER bash < script`),
# on the same container with the same trivial script, in the same run. Reports the median
# wall-time ratio, plus `config` latency and the peak memory of one `run`.
#   scripts/benchmark.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-30}"

source scripts/with-testbed.sh "${GPU_EXECUTOR_BENCHMARK_DIR:-/tmp/gpu-executor-benchmark}" 4570
command -v /usr/bin/time >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2; }
binary="$PWD/$(scripts/publish.sh)"

work="$(mktemp -d)"
testbed_executor_config "$work" > "$work/config.toml"
testbed_prepared_job "$work" 990001 "$binary"
container="gpu-executor-990001-job"

hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/run.json" \
  -n "gpu-executor run" "$binary --config $work/config.toml run $work/script build_script" \
  -n "reference (docker exec -i … bash < script)" "$PWD/scripts/reference-executor.sh $container $work/script build_script" >&2
hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/config.json" \
  -n "gpu-executor config" "$binary --config $work/config.toml config" >&2
peak_kib="$(/usr/bin/time -f '%M' "$binary" --config "$work/config.toml" run "$work/script" build_script 2>&1 >/dev/null | tail -n 1)"

"$binary" --config "$work/config.toml" cleanup >/dev/null 2>&1 || true
python3 - "$work/run.json" "$work/config.json" "$peak_kib" <<'PY'
import json, sys
run = json.load(open(sys.argv[1]))["results"]
config = json.load(open(sys.argv[2]))["results"][0]
ours, reference = run[0]["median"], run[1]["median"]
print(f"run, median per stage:  gpu-executor {ours*1000:.1f} ms, reference {reference*1000:.1f} ms, ratio {ours/reference:.2f}x (target <= 0.60x)")
print(f"config, median:         {config['median']*1000:.1f} ms")
print(f"run, peak memory (RSS): {int(sys.argv[3]) / 1024:.1f} MiB")
PY
rm -rf "$work"
