#!/usr/bin/env bash
# Make sure a Docker Engine answers and a static busybox is on the host.
# On a fresh Debian machine: installs docker.io and busybox-static, starts dockerd (as root).
set -euo pipefail

log() { printf 'engine.sh: %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

need_pkgs=()
# The helper image is imported from a STATIC busybox: Debian's plain busybox is dynamic.
dpkg -s busybox-static >/dev/null 2>&1 || need_pkgs+=(busybox-static)
if [ -z "${DOCKER_HOST:-}" ] && ! command -v dockerd >/dev/null 2>&1; then need_pkgs+=(docker.io); fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

if [ -z "${DOCKER_HOST:-}" ] && ! engine_up; then
  log "starting dockerd"
  as_root sh -c 'nohup dockerd >/var/log/voltool-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    engine_up && break
    sleep 1
  done
fi
if engine_up; then
  log "Docker Engine $(docker version --format '{{.Server.Version}}') is up"
else
  log "no Docker Engine answers"
  exit 1
fi
