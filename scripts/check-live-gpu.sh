#!/usr/bin/env bash
# The GPU checks that need a real GPU, for a GPU host without Docker (issue 3: "run the inventory
# parser once against a live nvidia-smi and add that output to the test fixtures").
#
#   scripts/check-live-gpu.sh OUTDIR [BINARY]
#
# It records nvidia-smi's answers to the exact questions gpu-executor asks, idle and with a
# process holding GPU memory, as fixtures named after the GPU model and count (copy them into
# tests/GpuExecutor.Tests/Fixtures/nvidia-smi/), and runs the published binary's `gpus --links`
# against the live nvidia-smi. It exits non-zero when the binary's inventory disagrees with
# `nvidia-smi -L` or when it fails to see memory held outside any job.
set -uo pipefail
out=${1:?usage: check-live-gpu.sh OUTDIR [BINARY]}
binary=${2:-artifacts/bin/gpu-executor}
mkdir -p "$out"
log="$out/check.log"
exec > >(tee "$log") 2>&1

# Keep in step with NvidiaSmiQuery.Arguments (a unit test checks this line).
query_arguments=(--query-gpu=index,uuid,name,memory.total,memory.used,utilization.gpu,mig.mode.current --format=csv,noheader,nounits)

say() { printf '== %s\n' "$*"; }
say "host: $(uname -srm)"
nvidia-smi --version || { echo "FAIL: no nvidia-smi"; exit 1; }
nvidia-smi -L
count=$(nvidia-smi -L | grep -c '^GPU ')
model=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr 'A-Z' 'a-z' | tr -c 'a-z0-9\n' '-' | sed 's/--*/-/g; s/-$//')
name="live-${model}-${count}"
say "fixture name: $name"

nvidia-smi "${query_arguments[@]}" > "$out/$name.query.txt"
nvidia-smi topo -m > "$out/$name.topo.txt"
# What prepare's in-container check reads (PrepareVerb.ReportGpusAsync).
nvidia-smi --query-gpu=uuid --format=csv,noheader > "$out/$name.uuid.txt"
nvidia-smi -q > "$out/$name.q.txt"
say "query"; cat "$out/$name.query.txt"
say "topo -m"; cat "$out/$name.topo.txt"

# What the allocation decision pays for nvidia-smi itself on real hardware (the issue-3
# benchmark runs a fake one): five calls of each question prepare asks.
milliseconds() { local start end; start=$(date +%s%N); "$@" > /dev/null; end=$(date +%s%N); echo $(((end - start) / 1000000)); }
say "nvidia-smi latency, ms (query, then topo -m), 5 calls each"
for _ in 1 2 3 4 5; do printf '%s ' "$(milliseconds nvidia-smi "${query_arguments[@]}")"; done; echo
for _ in 1 2 3 4 5; do printf '%s ' "$(milliseconds nvidia-smi topo -m)"; done; echo

state=$(mktemp -d)
cat > "$state/config.toml" <<TOML
state_dir = "$state/state"
[docker]
# No Docker on this host: the verb must still print the inventory, and exit non-zero.
endpoint = "unix://$state/no-docker.sock"
[gpus]
nvidia_smi = "nvidia-smi"
busy_memory_mib = 1024
TOML

failures=0
check_listing() { # $1: label, $2: expected state text for GPU 0
  say "gpu-executor gpus --links ($1)"
  "$binary" --config "$state/config.toml" gpus --links > "$state/listing" 2> "$state/errors"
  echo "exit code: $?"
  cat "$state/listing" "$state/errors"
  for uuid in $(nvidia-smi --query-gpu=uuid --format=csv,noheader); do
    grep -q -- "$uuid" "$state/listing" || { echo "FAIL: $uuid missing from the listing"; failures=$((failures + 1)); }
  done
  listed=$(grep -c '^[0-9]' "$state/listing")
  [ "$listed" -eq "$count" ] || { echo "FAIL: listed $listed GPUs, nvidia-smi -L has $count"; failures=$((failures + 1)); }
  grep -q "^0 .*$2" "$state/listing" || { echo "FAIL: GPU 0 is not '$2'"; failures=$((failures + 1)); }
}
check_listing idle "memory free"

# Hold 8 GiB on GPU 0 and keep it busy, as a process outside any job would.
say "holding GPU memory with python3/torch"
python3 - > "$state/holder.log" 2>&1 <<'PY' &
import torch, time
block = torch.empty(8 * 2**30, dtype=torch.uint8, device="cuda:0")
a = torch.randn(8192, 8192, device="cuda:0", dtype=torch.bfloat16)
print("holding", flush=True)
end = time.time() + 60
while time.time() < end:
    a @ a
    torch.cuda.synchronize()
PY
holder=$!
for _ in $(seq 1 60); do grep -q holding "$state/holder.log" && break; kill -0 "$holder" 2>/dev/null || break; sleep 1; done
sleep 2
nvidia-smi "${query_arguments[@]}" > "$out/$name-busy.query.txt"
say "query while busy"; cat "$out/$name-busy.query.txt"
nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory --format=csv,noheader,nounits
check_listing busy "memory in use"
kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null
cat "$state/holder.log"
rm -rf "$state"

say "failures: $failures"
[ "$failures" -eq 0 ]
