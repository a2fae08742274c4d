# Sourced (not run) by the storage benchmarks, after scripts/with-testbed.sh:
#   source scripts/benchmark-s3rver.sh
# The pieces both benchmarks need to reach the test bed's s3rver: an rclone remote named
# "bench", the executor's [stores.s3] table for it, a wall-clock timer and a median.
endpoint="$GPU_EXECUTOR_TEST_S3_ENDPOINT"

# rclone reaches s3rver with its fixed access key (the secret is not checked), and without any
# AWS_CA_BUNDLE the environment sets, as issue 4 asks.
unset AWS_CA_BUNDLE
export RCLONE_CONFIG_BENCH_TYPE=s3 RCLONE_CONFIG_BENCH_PROVIDER=Other RCLONE_CONFIG_BENCH_ENDPOINT="$endpoint"
export RCLONE_CONFIG_BENCH_ACCESS_KEY_ID=S3RVER RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY=S3RVER RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE=true

# s3rver_store_table BUCKET: the executor config's store for s3rver, allowed to read BUCKET.
s3rver_store_table() {
  cat <<TOML
[stores.s3]
type = "s3"
endpoint = "$endpoint"
path_style = true
access_key_id = "S3RVER"
secret_access_key = "S3RVER"
allow = ["$1"]
TOML
}

# seconds COMMAND...: how long it ran, its output discarded.
seconds() { local start end; start=$(date +%s.%N); "$@" >/dev/null 2>&1; end=$(date +%s.%N); awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f\n", b - a }'; }

# median ARGS...: the middle of an odd number of timings.
median() { printf '%s\n' "$@" | sort -n | sed -n "$((($# + 1) / 2))p"; }
