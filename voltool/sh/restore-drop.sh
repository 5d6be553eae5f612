#!/bin/sh
# Remove the staging directory $1 of the volume at /v; $2: the root's mtime to put
# back (staging created and removed an entry at the top), or empty.
cd /v && rm -rf -- "$1" && { [ -z "$2" ] || touch -d "@$2" /v 2>/dev/null || true; }
