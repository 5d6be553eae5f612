#!/bin/sh
# Write $1 to $2 inside the snapshot volume at /snap: whole or not at all.
cd /snap && printf "%s" "$1" > "$2.tmp" && mv -f "$2.tmp" "$2" && sync -f .
