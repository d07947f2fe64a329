#!/usr/bin/env bash
# Makes a Docker engine available for the docker engine's tests (issue 5): installs Debian's
# docker.io and busybox-static when missing, starts dockerd in the background when `docker info`
# does not answer, and waits until it does. Idempotent: a running daemon is left alone, and a
# second daemon is never started next to a live one.
#
# Sandboxed CI machines often lack a working iptables / overlayfs; when the plain start fails the
# script retries with `--iptables=false --bridge=none` (no NAT: containers get no network, which
# tcworker's tests do not need) and then with `--storage-driver=vfs`. The flags that worked are
# printed and written to /var/log/dockerd.flags; dockerd's output goes to /var/log/dockerd.log.
set -euo pipefail

PIDFILE=/var/run/docker.pid
LOGFILE=/var/log/dockerd.log

log() { echo "docker-setup: $*"; }

answers() { docker info >/dev/null 2>&1; }

wait_until_answers() {
  # $1: pid of a dockerd to watch (gives up early when it dies); waits up to ~30 s.
  local pid=$1
  for _ in $(seq 1 60); do
    answers && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.5
  done
  return 1
}

try_start() {
  local flags=("$@")
  log "starting dockerd ${flags[*]:-}"
  # Only reached when no live dockerd owns the pid file (checked below), so a stale one can go.
  rm -f "$PIDFILE"
  nohup dockerd --host=unix:///var/run/docker.sock "${flags[@]}" >>"$LOGFILE" 2>&1 &
  local pid=$!
  if wait_until_answers "$pid"; then
    log "dockerd (pid $pid) answers; flags: ${flags[*]:-(none)}"
    printf '%s\n' "${flags[*]:-}" >/var/log/dockerd.flags
    return 0
  fi
  log "dockerd with flags '${flags[*]:-}' did not come up (see $LOGFILE)"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  return 1
}

export DEBIAN_FRONTEND=noninteractive
missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v busybox >/dev/null 2>&1 || missing+=(busybox-static)
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if answers; then
  log "dockerd already answers"
  exit 0
fi

if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
  running=$(cat "$PIDFILE")
  if wait_until_answers "$running"; then
    log "dockerd (pid $running) answers"
    exit 0
  fi
  log "dockerd (pid $running) is running but 'docker info' fails (DOCKER_HOST=${DOCKER_HOST:-unset}); not starting another" >&2
  exit 1
fi

try_start && exit 0
try_start --iptables=false --bridge=none && exit 0
try_start --iptables=false --bridge=none --storage-driver=vfs && exit 0
log "could not start dockerd; last lines of $LOGFILE:" >&2
tail -n 20 "$LOGFILE" >&2 || true
exit 1
