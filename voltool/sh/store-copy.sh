#!/bin/sh
# Copy the tree at $1 (/src, or a directory in it) into a new snapshot
# directory of the store at /store.
# $2: the snapshot id; $3: its begun.json; the rest: the agent's own options
# (--prev TREE MANIFEST --prev-started NS). begun.json is written before any
# data; the manifest (gzip-compressed) is renamed into place only when the
# agent finished well.
# A previous snapshot whose tree is not a directory or whose manifest is not a
# regular file (none reached through a symlink of the store) is not linked
# from: the copy is then a full one (the agent would hang on a FIFO).
# The agent's stderr (JSON lines) is the helper's.
src="$1"; sid="$2"; begun="$3"; shift 3
if [ -L /store/snapshots ]; then echo "/store/snapshots is a symlink" >&2; exit 3; fi
if [ "$1" = --prev ]; then
  prev="${2%/data}"
  if [ -L "$prev" ] || [ -L "$2" ] || [ ! -d "$2" ] || [ -L "$3" ] || [ ! -f "$3" ] \
    || [ "$2" != "$prev/data" ] || [ "$3" != "$prev/manifest.jsonl" ]; then
    echo '{"event": "warning", "path": ".", "what": "the previous snapshot is damaged: not linked from"}' >&2
    set --
  fi
fi
mkdir -p /store/snapshots || exit 3
chmod 700 /store/snapshots || exit 3
d="/store/snapshots/$sid"
mkdir "$d" || exit 3
printf '%s' "$begun" > "$d/begun.json" || exit 3
python3 -I -m voltool_agent copy --gzip "$src" "$d/data" "$@" > "$d/manifest.jsonl.part"
code=$?
if [ "$code" -eq 0 ]; then
  mv -f -- "$d/manifest.jsonl.part" "$d/manifest.jsonl" || exit 3
fi
exit "$code"
