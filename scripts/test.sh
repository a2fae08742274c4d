#!/usr/bin/env bash
# The test command: sets up everything a fresh machine lacks, runs every test, tears down.
#   - installs docker.io, busybox-static, bash-static (scripts/testbed.sh install)
#   - starts a private dockerd and builds the local test image (no registry needed)
#   - publishes the NativeAOT binary that the end-to-end tests drive, and packages it (.deb)
#   - runs the unit and integration test projects
#   - stops the daemon on exit, pass or fail
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/with-testbed.sh "${GPU_EXECUTOR_TESTBED_DIR:-/tmp/gpu-executor-testbed}" 4568

echo "== publishing the NativeAOT binary" >&2
# A separate assignment: `export X="$(...)"` would hide a failed publish from set -e.
binary="$(scripts/publish.sh)"
export GPU_EXECUTOR_BINARY="$PWD/$binary"
echo "== building the Debian package (and running lintian on it)" >&2
package="$(scripts/package-deb.sh "$binary")"
export GPU_EXECUTOR_PACKAGE="$PWD/$package"
# Under this script a missing test bed is a failure, never a silent skip.
export GPU_EXECUTOR_REQUIRE_TESTBED=1

echo "== running the tests" >&2
log="$(mktemp)"
status=0
dotnet test GpuExecutor.sln -c Release --nologo 2>&1 | tee "$log" || status=$?

# Nothing the tests started may outlive them: checkpoint agents end once their containers are
# gone, so wait for them before the daemon stops, and fail the run if any is still there.
if ! scripts/testbed.sh leftovers "$GPU_EXECUTOR_BINARY" 90; then
  echo "FAILED: gpu-executor processes outlived the tests (listed above)." >&2
  status=1
fi

# One closing line in the plain 'N passed, N failed' form, summed over the test projects.
awk '/(Passed|Failed)! +- +Failed:/ {
       gsub(",", ""); for (i = 1; i <= NF; i++) {
         if ($i == "Failed:") failed += $(i+1); if ($i == "Passed:") passed += $(i+1); if ($i == "Skipped:") skipped += $(i+1) } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", passed, failed, skipped }' "$log"
rm -f "$log"
exit "$status"
