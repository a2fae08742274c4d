#!/usr/bin/env bash
# Benchmark of issue 13, the hand-over: from one segment's end to the next segment's first
# training step on the same warm host, with a 2 GiB checkpoint (4 × 512 MiB) in the built-in
# local store, against the 30 s goal; the median of 5 hand-overs, with its breakdown: prepare
# (of which restore), the runner's stages before the main step, and the trainer's own load of
# its checkpoint. Each segment writes a new checkpoint, so every hand-over moves fresh bytes.
# The comparison, in the same run: as many hand-overs with the agent's record of its last commit
# removed, so restore copies and hashes the 2 GiB from the work directory, as it did before.
#   scripts/benchmark-handover.sh [FILE_MIB] [HANDOVERS]
set -euo pipefail
cd "$(dirname "$0")/.."
file_mib="${1:-512}"
handovers="${2:-5}"

source scripts/with-testbed.sh "${GPU_EXECUTOR_BENCHMARK_DIR:-/tmp/gpu-executor-benchmark-handover}" 4574
binary="$PWD/$(scripts/publish.sh)"
work="$(mktemp -d)"
# The last job's agent ends once its container is gone: wait for it before removing its files.
trap 'scripts/testbed.sh leftovers "$binary" 60 || true; rm -rf "$work" || true; scripts/testbed.sh stop' EXIT

testbed_executor_config "$work" > "$work/config.toml"

# The trainer: loads its checkpoint (reads every byte, as torch.load would), takes its first
# step, then writes the next checkpoint and marks it complete.
mkdir -p "$work/trainer"
cat > "$work/trainer/handover.sh" <<'TRAINER'
#!/usr/bin/env bash
set -euo pipefail
echo "handover: trainer started $EPOCHREALTIME"
if [ -f "$CHECKPOINT_DIR/shard-0.bin" ]; then cat "$CHECKPOINT_DIR"/shard-*.bin > /dev/null; fi
echo "handover: first step $EPOCHREALTIME"
for i in 0 1 2 3; do head -c $((FILE_MIB << 20)) /dev/urandom > "$CHECKPOINT_DIR/shard-$i.bin"; done
touch "$CHECKPOINT_MARKER"
TRAINER
chmod +x "$work/trainer/handover.sh"

job() {
  cat > "$work/job-$1.json" <<JSON
{"job_id": $1, "name": "handover", "sources": "$work/trainer", "script": ["./handover.sh"], "timeout": 3600,
 "variables": {"CHECKPOINTS": "on", "CHECKPOINT_RUN_KEY": "handover", "FILE_MIB": "$file_mib"}}
JSON
  "$binary" --config "$work/config.toml" simulate "$work/job-$1.json" --result "$work/job-$1.result.json" > "$work/job-$1.log" 2>&1 \
    || { echo "job $1 failed:" >&2; tail -n 30 "$work/job-$1.log" >&2; exit 1; }
}

echo "== segment 0 writes the first 4 x $file_mib MiB checkpoint" >&2
job 77000
for round in $(seq 1 $((2 * handovers))); do
  table="$work/handovers.tsv"
  if [ "$round" -gt "$handovers" ]; then
    table="$work/full-restores.tsv"
    # Wait for the previous agent's last commit record, then take the shortcut away.
    while pgrep -f "checkpoints agent $((77000 + round - 1)) " >/dev/null; do sleep 0.2; done
    rm -f "$work/state/checkpoints/p1-handover/committed.json"
  fi
  ended="$EPOCHREALTIME"
  job $((77000 + round))
  python3 - "$work/job-$((77000 + round)).log" "$work/job-$((77000 + round)).result.json" "$ended" >> "$table" <<'PY'
import json, re, sys
log = open(sys.argv[1]).read()
calls = json.load(open(sys.argv[2]))["calls"]
ended = float(sys.argv[3])
started = float(re.search(r"handover: trainer started (\S+)", log).group(1))
first = float(re.search(r"handover: first step (\S+)", log).group(1))
restore = re.search(r"restored generation \d+ .*?: .*?\(([^)]*) downloaded.*?in ([0-9.]+) s", log)
prepare = sum(call["seconds"] for call in calls if call["name"] == "prepare")
print(f"{first - ended:.2f}\t{prepare:.2f}\t{float(restore.group(2)):.2f}\t{started - ended - prepare:.2f}\t{first - started:.2f}\t{restore.group(1)}")
PY
  echo "   hand-over $round$([ "$table" = "$work/handovers.tsv" ] || echo ' (full restore)'): $(tail -n 1 "$table" | cut -f1) s" >&2
done

python3 - "$work/handovers.tsv" "$file_mib" "$work/full-restores.tsv" <<'PY'
import statistics, sys
def read(path):
    return [line.rstrip("\n").split("\t") for line in open(path)]
rows, full = read(sys.argv[1]), read(sys.argv[3])
def median(column, table=None):
    return statistics.median(float(row[column]) for row in (table or rows))
total = median(0)
print(f"hand-over, {4 * int(sys.argv[2])} MiB checkpoint, median of {len(rows)}: {total:.1f} s (goal <= 30 s: {'met' if total <= 30 else 'NOT met'})")
print(f"  against a full restore (copy and hash from the work directory), same run: {median(0, full):.1f} s, restore {median(2, full):.1f} s: {total / median(0, full):.2f}x the time")
print(f"  prepare:                         {median(1):.1f} s, of which restore {median(2):.1f} s ({rows[len(rows) // 2][5]} downloaded)")
print(f"  runner stages before the step:   {median(3):.1f} s")
print(f"  the trainer's own load:          {median(4):.1f} s")
print("  each hand-over (total, prepare, restore, stages, load): " + "; ".join(" ".join(row[:5]) for row in rows))
PY
