#!/bin/sh
# What the store mounted at /store holds: for each complete snapshot, a line
# "<id> <bytes>", the bytes of its files that no other snapshot shares (a link
# count of 1); then "total <bytes>", every file of the store counted once.
[ ! -L /store/snapshots ] && cd /store/snapshots || exit 3
for d in *; do
  case "$d" in *[!0-9a-f]*|"") continue;; esac
  if [ -L "$d" ] || [ -L "$d/data" ] || [ ! -f "$d/snapshot.json" ] || [ ! -d "$d/data" ]; then
    continue
  fi
  find "$d/data" -type f -links 1 -exec stat -c %s {} + \
    | awk -v id="$d" '{ s += $1 } END { printf "%s %.0f\n", id, s }'
done
# busybox du counts a file with several links once; -k: 1024-byte blocks in use.
# (%.0f, not %d: busybox awk's %d stops at 2 GiB.)
du -sk /store | awk '{ printf "total %.0f\n", $1 * 1024 }'
