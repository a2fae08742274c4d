#!/usr/bin/env bash
# The test bed: a private dockerd on a socket of its own, the local test images, and a real
# S3 server (s3rver from npm) on loopback.
#
#   scripts/testbed.sh install   install docker.io and friends from apt (idempotent)
#   scripts/testbed.sh start     install, start dockerd, build the test images; prints the env file path
#   scripts/testbed.sh stop      stop dockerd and s3rver by their pids and unmount what dockerd left
#   scripts/testbed.sh status    exit 0 when the daemon answers
#   scripts/testbed.sh daemon-start | daemon-stop
#                                just a dockerd and the test images in GPU_EXECUTOR_TESTBED_DIR: a
#                                second "host" for tests that stop its daemon under a job;
#                                GPU_EXECUTOR_TESTBED_LIVE_RESTORE=0 starts it without live-restore
#   scripts/testbed.sh leftovers BINARY [WAIT]
#                                waits up to WAIT s (default 60) for every process of BINARY to end
#                                (checkpoint agents end once their containers are gone); stops and
#                                lists any left, and fails if there were any
#
# Why it is built this way is in docs/testbed.md: no registry is reachable, so images are
# built from busybox-static and bash-static with `docker import`; systemd does not run, so the
# daemon is started by hand with setsid and its output sent to files (a daemon that inherits
# our stdout would keep CI's pipe open); a second daemon must not fight over docker0, so ours
# runs with --bridge=none.
set -euo pipefail

TESTBED_DIR="${GPU_EXECUTOR_TESTBED_DIR:-/tmp/gpu-executor-testbed}"
SOCKET="$TESTBED_DIR/docker.sock"
PIDFILE="$TESTBED_DIR/docker.pid"
ENV_FILE="$TESTBED_DIR/env"
# One tag per image recipe: bump it when the recipe changes so a cached image is rebuilt.
S3_PIDFILE="$TESTBED_DIR/s3rver.pid"
S3_PORT="${GPU_EXECUTOR_TESTBED_S3_PORT:-4568}"
LIVE_RESTORE="${GPU_EXECUTOR_TESTBED_LIVE_RESTORE:-1}"
S3RVER_VERSION="3.7.1"
TEST_IMAGE="gpu-executor-test/bash:1"
# The same without bash: what a job gets wrong when it picks an alpine-style image.
NO_BASH_IMAGE="gpu-executor-test/busybox:1"

log() { printf 'testbed: %s\n' "$*" >&2; }

install_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v curl >/dev/null || missing+=(curl)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  [ -x /bin/bash-static ] || missing+=(bash-static)
  command -v hyperfine >/dev/null || missing+=(hyperfine)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  # The package: lintian checks it, and the binary links the system's zlib.
  command -v lintian >/dev/null || missing+=(lintian)
  [ -e /usr/lib/x86_64-linux-gnu/libz.so ] || missing+=(zlib1g-dev)
  # The metrics textfile is checked with Prometheus' own promtool.
  command -v promtool >/dev/null || missing+=(prometheus)
  # The clock-jump tests move the executor's wall clock (not its monotonic one) with libfaketime.
  [ -e /usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1 ] || missing+=(libfaketime)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  # Installing docker.io must not start a system daemon that would take docker0 and
  # /var/run/docker.sock; policy-rc.d answering 101 forbids service starts.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

daemon_answers() {
  curl -fsS --max-time 2 --unix-socket "$SOCKET" http://localhost/_ping >/dev/null 2>&1
}

start_daemon() {
  mkdir -p "$TESTBED_DIR"
  if daemon_answers; then
    log "dockerd already answers on $SOCKET"
    return 0
  fi
  log "starting dockerd on $SOCKET"
  local restore_flag=--live-restore
  if [ "$LIVE_RESTORE" = 0 ]; then restore_flag=--live-restore=false; fi
  setsid dockerd \
    --host "unix://$SOCKET" \
    --data-root "$TESTBED_DIR/data" \
    --exec-root "$TESTBED_DIR/exec" \
    --pidfile "$PIDFILE" \
    --bridge=none --iptables=false --ip-masq=false \
    "$restore_flag" \
    </dev/null >"$TESTBED_DIR/dockerd.log" 2>&1 &
  wait_until_answers dockerd daemon_answers "$TESTBED_DIR/dockerd.log" 150
}

# wait_until_answers NAME CHECK LOG TRIES: polls CHECK every 0.2 s; after TRIES, shows LOG and fails.
wait_until_answers() {
  local waited=0
  until "$2"; do
    sleep 0.2
    waited=$((waited + 1))
    if [ "$waited" -gt "$4" ]; then
      log "$1 did not answer within $(($4 / 5)) s; its log:"
      tail -n 30 "$3" >&2
      return 1
    fi
  done
}

docker_cli() { docker --host "unix://$SOCKET" "$@"; }

s3_answers() {
  curl -sS --max-time 2 -o /dev/null "http://127.0.0.1:$S3_PORT/" 2>/dev/null
}

start_s3() {
  if [ -f "$S3_PIDFILE" ] && kill -0 "$(cat "$S3_PIDFILE")" 2>/dev/null && s3_answers; then
    return 0
  fi
  local install="$TESTBED_DIR/s3rver"
  if [ ! -f "$install/node_modules/s3rver/bin/s3rver.js" ]; then
    log "installing s3rver $S3RVER_VERSION from npm"
    mkdir -p "$install"
    (cd "$install" && npm install --no-audit --no-fund --silent "s3rver@$S3RVER_VERSION" >&2)
  fi
  log "starting s3rver on 127.0.0.1:$S3_PORT"
  rm -rf "$TESTBED_DIR/s3-data"
  mkdir -p "$TESTBED_DIR/s3-data"
  # Without the legacy provider, a ListObjectsV2 page with a continuation token fails (docs/testbed.md).
  NODE_OPTIONS=--openssl-legacy-provider setsid node "$install/node_modules/s3rver/bin/s3rver.js" \
    -d "$TESTBED_DIR/s3-data" -a 127.0.0.1 -p "$S3_PORT" --silent \
    </dev/null >"$TESTBED_DIR/s3rver.log" 2>&1 &
  echo $! > "$S3_PIDFILE"
  wait_until_answers s3rver s3_answers "$TESTBED_DIR/s3rver.log" 100
}

stop_s3() {
  if [ -f "$S3_PIDFILE" ]; then
    local pid
    pid="$(cat "$S3_PIDFILE")"
    kill "$pid" 2>/dev/null || true
    rm -f "$S3_PIDFILE"
  fi
  # The next start empties it anyway, and a benchmark leaves gigabytes there. (A server still
  # exiting may write one more file: then some is left, which start removes.)
  rm -rf "$TESTBED_DIR/s3-data" 2>/dev/null || true
}

build_images() {
  if docker_cli image inspect "$TEST_IMAGE" >/dev/null 2>&1 && docker_cli image inspect "$NO_BASH_IMAGE" >/dev/null 2>&1; then
    return 0
  fi
  log "building $TEST_IMAGE and $NO_BASH_IMAGE from busybox-static and bash-static"
  local rootfs
  rootfs="$(mktemp -d)"
  mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root}
  chmod 1777 "$rootfs/tmp"
  cp /bin/busybox "$rootfs/bin/busybox"
  local applet
  for applet in $(/bin/busybox --list); do
    [ -e "$rootfs/bin/$applet" ] || ln -s busybox "$rootfs/bin/$applet"
  done
  rm -f "$rootfs/bin/bash"
  cp /bin/bash-static "$rootfs/bin/bash"
  # The runner's scripts start with #!/usr/bin/env bash.
  ln -sf /bin/env "$rootfs/usr/bin/env"
  printf 'root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n' > "$rootfs/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' > "$rootfs/etc/group"
  tar -C "$rootfs" -c . | docker_cli import -c 'CMD ["/bin/bash"]' - "$TEST_IMAGE" >/dev/null
  rm -f "$rootfs/bin/bash"
  tar -C "$rootfs" -c . | docker_cli import -c 'CMD ["/bin/sh"]' - "$NO_BASH_IMAGE" >/dev/null
  rm -rf "$rootfs"
}

# gitlab-ci-local checks the CI components and the example pipeline with GitLab's own schema.
# 4.70.0: later releases need Node 22, and Debian's is 18/20.
GITLAB_CI_LOCAL_VERSION="4.70.0"

install_gitlab_ci_local() {
  local install="$TESTBED_DIR/gitlab-ci-local"
  if [ ! -x "$install/node_modules/.bin/gitlab-ci-local" ]; then
    log "installing gitlab-ci-local $GITLAB_CI_LOCAL_VERSION from npm"
    mkdir -p "$install"
    (cd "$install" && npm install --no-audit --no-fund --silent "gitlab-ci-local@$GITLAB_CI_LOCAL_VERSION" >&2)
  fi
}

write_env_file() {
  cat > "$ENV_FILE" <<EOF
export DOCKER_HOST=unix://$SOCKET
export GPU_EXECUTOR_TEST_IMAGE=$TEST_IMAGE
export GPU_EXECUTOR_TEST_IMAGE_WITHOUT_BASH=$NO_BASH_IMAGE
export GPU_EXECUTOR_TESTBED_DIR=$TESTBED_DIR
export GPU_EXECUTOR_TEST_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
export GPU_EXECUTOR_GITLAB_CI_LOCAL=$TESTBED_DIR/gitlab-ci-local/node_modules/.bin/gitlab-ci-local
EOF
}

stop_daemon() {
  if [ -f "$PIDFILE" ]; then
    local pid
    pid="$(cat "$PIDFILE")"
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping dockerd (pid $pid)"
      kill "$pid" 2>/dev/null || true
      local waited=0
      while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do
        sleep 0.2
        waited=$((waited + 1))
      done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$PIDFILE"
  fi
  # With --live-restore the daemon leaves containers and their mounts behind on purpose: end
  # each container (its init is the shim's child; killing it ends the container's whole PID
  # namespace), then the shims, and unmount, so no process outlives the test bed and the next
  # start and any rm -rf work.
  local shim
  for shim in $(pgrep -f "containerd-shim.*$TESTBED_DIR" || true); do
    pkill -9 -P "$shim" 2>/dev/null || true
  done
  pkill -f "containerd-shim.*$TESTBED_DIR" 2>/dev/null || true
  local mountpoint
  for mountpoint in $(awk -v dir="$TESTBED_DIR" 'index($2, dir) == 1 { print $2 }' /proc/mounts | sort -r); do
    umount -l "$mountpoint" 2>/dev/null || true
  done
}

# leftovers BINARY WAIT: no process of BINARY may outlive the scripts that started them.
leftovers() {
  local binary="$1" wait_tenths=$((${2:-60} * 10)) waited=0 pids
  while pids="$(pgrep -f -- "^$binary " || true)" && [ -n "$pids" ] && [ "$waited" -lt "$wait_tenths" ]; do
    sleep 0.1
    waited=$((waited + 1))
  done
  [ -z "$pids" ] && return 0
  log "processes of $binary still running after ${2:-60} s, stopped now:"
  ps -o pid=,args= -p "$(echo "$pids" | paste -sd,)" >&2 || true
  # shellcheck disable=SC2086
  kill -9 $pids 2>/dev/null || true
  return 1
}

case "${1:-}" in
  install) install_packages ;;
  start)
    install_packages
    start_daemon
    build_images
    start_s3
    install_gitlab_ci_local
    write_env_file
    echo "$ENV_FILE"
    ;;
  stop)
    stop_s3
    stop_daemon
    ;;
  status) daemon_answers ;;
  daemon-start)
    start_daemon
    build_images
    ;;
  daemon-stop) stop_daemon ;;
  leftovers) leftovers "${2:?usage: $0 leftovers BINARY [WAIT]}" "${3:-60}" ;;
  *)
    echo "usage: $0 install|start|stop|status|daemon-start|daemon-stop|leftovers BINARY [WAIT]" >&2
    exit 2
    ;;
esac
