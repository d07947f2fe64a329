#!/usr/bin/env bash
# Makes a Docker engine available for the docker engine's tests (issue 5): installs Debian's
# docker.io and busybox-static when missing, starts dockerd in the background when `docker info`
# does not answer, and waits until it does. Idempotent: a running daemon is left alone.
#
# Sandboxed CI machines often lack a working iptables / overlayfs; when the plain start fails the
# script retries with `--iptables=false --bridge=none` (no NAT: containers get no network, which
# tcworker's tests do not need) and then with `--storage-driver=vfs`. The flags that worked are
# printed and written to /var/log/dockerd.flags.
set -euo pipefail

log() { echo "docker-setup: $*"; }

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if docker info >/dev/null 2>&1; then
  log "dockerd already answers"
  exit 0
fi

wait_for_daemon() {
  # $1: pid of the dockerd just started; answers within ~30 s or gives up.
  local pid=$1
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      return 1
    fi
    sleep 0.5
  done
  kill "$pid" 2>/dev/null || true
  return 1
}

try_start() {
  local flags=("$@")
  log "starting dockerd ${flags[*]}"
  rm -f /var/run/docker.pid
  nohup dockerd --host=unix:///var/run/docker.sock "${flags[@]}" >>/var/log/dockerd.log 2>&1 &
  local pid=$!
  if wait_for_daemon "$pid"; then
    log "dockerd (pid $pid) answers with flags: ${flags[*]:-(none)}"
    printf '%s\n' "${flags[*]:-}" >/var/log/dockerd.flags
    return 0
  fi
  log "dockerd with flags '${flags[*]:-}' did not come up (see /var/log/dockerd.log)"
  wait "$pid" 2>/dev/null || true
  return 1
}

try_start && exit 0
try_start --iptables=false --bridge=none && exit 0
try_start --iptables=false --bridge=none --storage-driver=vfs && exit 0
log "could not start dockerd; last lines of /var/log/dockerd.log:" >&2
tail -n 20 /var/log/dockerd.log >&2 || true
exit 1
