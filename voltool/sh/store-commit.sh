#!/bin/sh
# Commit snapshot $1 of the store at /store: meta.json ($2), then, last and by
# rename, snapshot.json ($3), the commit marker; each flushed before the next.
set -e
d="/store/snapshots/$1"
[ -d "$d" ] && [ ! -L "$d" ] && [ -f "$d/manifest.jsonl" ]
printf '%s' "$2" > "$d/meta.json.tmp"
mv -f -- "$d/meta.json.tmp" "$d/meta.json"
printf '%s' "$3" > "$d/snapshot.json.tmp"
sync -f "$d"
mv -f -- "$d/snapshot.json.tmp" "$d/snapshot.json"
sync -f "$d"
