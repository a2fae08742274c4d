#!/usr/bin/env bash
# The comparison for scripts/benchmark.sh: a custom executor's run stage as the GitLab docs
# sketch it, a few lines of bash around the docker CLI. Not used by the product.
#   reference-executor.sh CONTAINER SCRIPT STAGE
set -uo pipefail
container="$1"
script="$2"
docker exec -i "$container" bash < "$script"
code=$?
if [ "$code" -ne 0 ]; then
  echo "$code" > "${BUILD_EXIT_CODE_FILE:-/dev/null}"
  exit "${BUILD_FAILURE_EXIT_CODE:-1}"
fi
