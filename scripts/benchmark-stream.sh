#!/usr/bin/env bash
# Benchmark of issue 14, streamed datasets: a dataset of SHARDS shards of SHARD_MIB MiB (64 x 32
# MiB = 2 GiB by default) on s3rver, read in order by a job that needs each shard only when it
# gets to it (it waits for the file, reads every byte, then "trains" on it for STEP_SECONDS).
# The comparison, in the same run and from a cold cache each time: the same job with the
# dataset prefetched (mode=prefetch, the default). Reported: the time from the job's launch to
# its first read, and to its last read, for both, and their ratios; and that each object was
# fetched once (the objects in the cache, against the shards).
#   scripts/benchmark-stream.sh [SHARDS] [SHARD_MIB] [STEP_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
shards="${1:-64}"
shard_mib="${2:-32}"
step_seconds="${3:-0.1}"

source scripts/with-testbed.sh "${GPU_EXECUTOR_BENCHMARK_DIR:-/tmp/gpu-executor-benchmark-stream}" 4575
command -v rclone >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rclone >&2
binary="$PWD/$(scripts/publish.sh)"
work="$(mktemp -d)"
trap 'scripts/testbed.sh leftovers "$binary" 60 || true; rm -rf "$work" || true; scripts/testbed.sh stop' EXIT
bucket=stream-bench

source scripts/benchmark-s3rver.sh
echo "== seeding s3rver: $shards x $shard_mib MiB" >&2
mkdir -p "$work/seed"
for i in $(seq -w 0 $((shards - 1))); do head -c $((shard_mib << 20)) /dev/urandom > "$work/seed/shard-$i.tar"; done
rclone mkdir "bench:$bucket"
rclone copy --transfers 8 "$work/seed" "bench:$bucket/shards" >&2
(cd "$work/seed" && sha256sum shard-*.tar | sort -k2) > "$work/expected.txt"
rm -rf "$work/seed"

run() { # run MODE JOB_ID: one job from a cold cache; prints "LAUNCH FIRST LAST"
  rm -rf "$work/state" "$work/builds"
  { testbed_executor_config "$work"; s3rver_store_table "$bucket"; } > "$work/config.toml"
  python3 - "$work/job-$2.json" "$2" "s3://$bucket/shards/ -> /data/shards mode=$1" "$step_seconds" "$((shards - 1))" <<'PY'
import json, sys
path, job_id, datasets, step, last = sys.argv[1:]
reader = (
    'first=""; for n in $(seq -w 0 $LAST); do f=/data/shards/shard-$n.tar; '
    'until [ -f "$f" ]; do sleep 0.05; done; '
    '[ -n "$first" ] || { first=$EPOCHREALTIME; echo "first read $first"; }; '
    'sha256sum "$f"; sleep "$STEP_SECONDS"; done; echo "last read $EPOCHREALTIME"'
)
json.dump({"job_id": int(job_id), "name": "reader", "timeout": 3600, "script": [reader],
           "variables": {"DATASETS": datasets, "STEP_SECONDS": step, "LAST": last}}, open(path, "w"))
PY
  local launch
  launch="$EPOCHREALTIME"
  "$binary" --config "$work/config.toml" simulate "$work/job-$2.json" --result "$work/job-$2.result.json" > "$work/job-$2.log" 2>&1 \
    || { echo "job $2 ($1) failed:" >&2; tail -n 30 "$work/job-$2.log" >&2; exit 1; }
  grep -E '^[0-9a-f]{64}  /data/shards/' "$work/job-$2.log" | sed 's|/data/shards/||' | sort -k2 | diff -q - "$work/expected.txt" >/dev/null \
    || { echo "job $2 ($1) read other bytes than the store holds" >&2; exit 1; }
  local objects
  objects=$(find "$work/state/datasets/objects" -type f ! -name '*.key' ! -name '*.part' ! -name '*.ranges' | wc -l)
  [ "$objects" -eq "$shards" ] || { echo "job $2 ($1): $objects objects in the cache, not $shards" >&2; exit 1; }
  echo "$launch $(grep -o 'first read [0-9.]*' "$work/job-$2.log" | cut -d' ' -f3) $(grep -o 'last read [0-9.]*' "$work/job-$2.log" | cut -d' ' -f3)"
}

echo "== $shards x $shard_mib MiB, a reader that takes ${step_seconds} s per shard, cold cache each time" >&2
declare -a prefetch stream
for round in 1 2 3; do
  prefetch+=("$(run prefetch $((79000 + round)))")
  stream+=("$(run stream $((79100 + round)))")
  echo "   round $round done" >&2
done

python3 - "$shards" "$shard_mib" "${prefetch[@]}" "${stream[@]}" <<'PY'
import statistics, sys
shards, mib = int(sys.argv[1]), int(sys.argv[2])
rows = [list(map(float, row.split())) for row in sys.argv[3:]]
prefetch, stream = rows[:len(rows) // 2], rows[len(rows) // 2:]
def median(table, column):
    return statistics.median(row[column] - row[0] for row in table)
first_p, last_p = median(prefetch, 1), median(prefetch, 2)
first_s, last_s = median(stream, 1), median(stream, 2)
print(f"{shards} x {mib} MiB ({shards * mib / 1024:.1f} GiB) on s3rver, medians of {len(stream)} cold runs each, every byte verified, each object fetched once:")
print(f"  first read:  stream {first_s:.1f} s, prefetch {first_p:.1f} s: {first_s / first_p:.2f}x")
print(f"  last read:   stream {last_s:.1f} s, prefetch {last_p:.1f} s: {last_s / last_p:.2f}x (margin: <= 1.10x)")
PY
