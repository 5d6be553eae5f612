#!/usr/bin/env bash
# Install Debian's packages for the commands named (a command a package), those missing,
# when this runs as root with apt-get; says which could not be had, and never fails:
# the caller decides what a missing one means.
set -uo pipefail
missing=()
for tool in "$@"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "packages.sh: cannot install ${missing[*]} (not root, or no apt-get)" >&2
  exit 0
fi
echo "packages.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1 ||
  { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; } ||
  echo "packages.sh: cannot install ${missing[*]}" >&2
exit 0
