#!/bin/sh
# Print the first line of the manifest $1 (in the store at /store: the root's
# entry), then the first entry that is a device node or FIFO, if there is one.
# Manifest lines are canonical JSON: the pattern can only match a "type" key.
m="/store/$1"
if [ ! -f "$m" ] || [ -L "$m" ]; then echo "no manifest" >&2; exit 3; fi
head -n 1 "$m"
grep -m 1 -E '"type":"(block|char|fifo)"' "$m" || true
