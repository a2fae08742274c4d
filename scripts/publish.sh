#!/usr/bin/env bash
# Publishes gpu-executor as one NativeAOT binary: artifacts/bin/gpu-executor.
# NativeAOT because the runner starts the binary afresh for every stage, and a JIT start-up
# costs tens of milliseconds per stage (see the benchmark in README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
output="${1:-artifacts/bin}"
dotnet publish src/GpuExecutor/GpuExecutor.csproj \
  -c Release -r linux-x64 -p:PublishAot=true \
  -o "$output" --nologo -v quiet -clp:ErrorsOnly >&2
echo "$output/gpu-executor"
