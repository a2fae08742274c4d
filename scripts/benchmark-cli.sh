#!/usr/bin/env bash
# Benchmark of issue 16: what moving the command line to System.CommandLine costs the runner.
# Publishes gpu-executor at BASE (default e7ccfd8, the last hand-parsed command line) in a
# scratch worktree, and measures it against this tree's binary in the same run: `config`'s
# latency, and `run`'s per-stage cost on one container with a trivial script. Reports both
# medians and their difference in ms (the target: under 5 ms either way).
#   scripts/benchmark-cli.sh [BASE] [RUNS]
# GPU_EXECUTOR_BASELINE_BINARY=PATH skips the baseline build and uses that binary.
set -euo pipefail
cd "$(dirname "$0")/.."
base="${1:-e7ccfd8}"
runs="${2:-40}"

source scripts/with-testbed.sh "${GPU_EXECUTOR_BENCHMARK_DIR:-/tmp/gpu-executor-benchmark-cli}" 4578
binary="$PWD/$(scripts/publish.sh)"
baseline="${GPU_EXECUTOR_BASELINE_BINARY:-}"
work="$(mktemp -d)"
trap 'git worktree remove --force "$work/base-src" >/dev/null 2>&1 || true; scripts/testbed.sh leftovers "$binary" 60 || true; rm -rf "$work" || true; scripts/testbed.sh stop' EXIT
git worktree prune
if [ -z "$baseline" ]; then
  echo "== publishing the baseline at $base" >&2
  git worktree add --detach "$work/base-src" "$base" >/dev/null
  (cd "$work/base-src" && scripts/publish.sh "$work/base-bin" >/dev/null)
  baseline="$work/base-bin/gpu-executor"
fi

testbed_executor_config "$work" > "$work/config.toml"
testbed_prepared_job "$work" 990016 "$binary"

hyperfine -N --warmup 5 --runs "$runs" --export-json "$work/config.json" \
  -n "config, baseline" "$baseline --config $work/config.toml config" \
  -n "config, System.CommandLine" "$binary --config $work/config.toml config" >&2
hyperfine -N --warmup 3 --runs "$runs" --export-json "$work/run.json" \
  -n "run, baseline" "$baseline --config $work/config.toml run $work/script build_script" \
  -n "run, System.CommandLine" "$binary --config $work/config.toml run $work/script build_script" >&2

"$binary" --config "$work/config.toml" cleanup >/dev/null 2>&1 || true
python3 - "$work/config.json" "$work/run.json" "$base" <<'PY'
import json, sys
for path, what in ((sys.argv[1], "config latency"), (sys.argv[2], "run, per stage")):
    base, new = json.load(open(path))["results"]
    delta = (new["median"] - base["median"]) * 1000
    print(f"{what:16} median: baseline ({sys.argv[3]}) {base['median']*1000:.1f} ms, System.CommandLine {new['median']*1000:.1f} ms, "
          f"difference {delta:+.1f} ms (ratio {new['median']/base['median']:.2f}x; target |difference| < 5 ms)")
PY
