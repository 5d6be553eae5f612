#!/bin/sh
# Remove the old directory $1 and the marker $2 of the volume at /v, then set the
# root's mtime $3 again (removing entries changed it).
cd /v && rm -rf -- "$1" && rm -f -- "$2" && { touch -d "@$3" /v 2>/dev/null || true; }
