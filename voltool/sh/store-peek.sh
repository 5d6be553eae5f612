#!/bin/sh
# For the snapshot directory $1 (snapshots/<id>) of the store at /store: print
# the first line of its manifest (decompressed) (the root's entry, at most $2 bytes), then,
# if its data holds a device node or FIFO, a line "block", "char" or "fifo"
# and that entry's path. The data is searched, not the manifest: the data is
# what a restore copies, whatever the manifest says. Nothing is read through
# a symlink, nor from a file that is not a regular one (a FIFO would hang).
d="/store/$1"
for p in /store/snapshots "$d" "$d/data"; do
  if [ -L "$p" ] || [ ! -d "$p" ]; then echo "not a directory: $p" >&2; exit 3; fi
done
m="$d/manifest.jsonl"
if [ ! -f "$m" ] || [ -L "$m" ]; then echo "no manifest" >&2; exit 3; fi
# The manifest is gzip-compressed (plain in stores made before that).
if [ "$(head -c 2 -- "$m" | od -An -tx1 | tr -d ' \n')" = 1f8b ]; then
  line=$(gunzip -c < "$m" | head -c "$2" | head -n 1) || exit 3
else
  line=$(head -c "$2" -- "$m" | head -n 1) || exit 3
fi
printf '%s\n' "$line"
cd "$d/data" || exit 3
found=$(find . \( -type b -o -type c -o -type p \) -print -quit) || exit 3
[ -n "$found" ] || exit 0
case "$(stat -c %F -- "$found")" in
  block*) echo block;;
  character*) echo char;;
  *) echo fifo;;
esac
printf '%s\n' "${found#./}"
