# Sourced (not run) by demo.sh, test.sh and benchmark.sh, from the repository root:
#   source scripts/with-testbed.sh DIR S3_PORT
# installs what the test bed needs, starts its dockerd in DIR, stops it when the calling script
# exits (pass or fail), and exports DOCKER_HOST and the test image names.
export GPU_EXECUTOR_TESTBED_DIR="$1"
# Each test bed gets its own s3rver port, so a demo and a test run can share the machine.
export GPU_EXECUTOR_TESTBED_S3_PORT="$2"
export DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1 DOTNET_SKIP_FIRST_TIME_EXPERIENCE=1
scripts/testbed.sh install
# On the way out, pass or fail: first let the checkpoint agents the script's jobs started end
# (they do once their containers are gone; any still there is stopped and listed), then stop the
# daemons, so no gpu-executor process is left behind.
trap 'scripts/testbed.sh leftovers "$PWD/artifacts/bin/gpu-executor" 60 || true; scripts/testbed.sh stop' EXIT
# shellcheck disable=SC1090
source "$(scripts/testbed.sh start)"

# testbed_executor_config WORK: an executor config for jobs on this test bed's dockerd, with its
# state, builds and cache under WORK and no GPUs; a script appends its own tables to it.
testbed_executor_config() {
  local work="$1"
  cat <<TOML
state_dir = "$work/state"
[docker]
endpoint = "$DOCKER_HOST"
[images]
default = "$GPU_EXECUTOR_TEST_IMAGE"
allowed = ["gpu-executor-test/*"]
pull_policy = "never"
[builds]
host_dir = "$work/builds"
[cache]
host_dir = "$work/cache"
[gpus]
mode = "none"
TOML
}

# testbed_prepared_job WORK JOB_ID BINARY: a trivial job (WORK/response.json, WORK/script) whose
# container BINARY prepares with WORK/config.toml, and the runner's environment exported, for
# benchmarks that time one verb against it; they clean it up with BINARY's cleanup.
testbed_prepared_job() {
  local work="$1" job_id="$2" binary="$3"
  cat > "$work/response.json" <<JSON
{"id": $job_id, "job_info": {"name": "bench", "project_id": 1, "project_full_path": "bench/bench", "pipeline_id": 1},
 "git_info": {"ref": "main"}, "runner_info": {"timeout": 3600}, "image": {"name": "$GPU_EXECUTOR_TEST_IMAGE"}}
JSON
  printf '#!/usr/bin/env bash\ntrue\n' > "$work/script"
  export JOB_RESPONSE_FILE="$work/response.json" BUILD_EXIT_CODE_FILE="$work/build_exit_code"
  export BUILD_FAILURE_EXIT_CODE=1 SYSTEM_FAILURE_EXIT_CODE=2 TMPDIR="$work"
  "$binary" --config "$work/config.toml" prepare >/dev/null 2>&1
}
