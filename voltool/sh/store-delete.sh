#!/bin/sh
# Remove snapshot $1's directory from the store mounted at /store. Renamed
# first, so that a delete cut short never leaves half a snapshot listed.
set -e
cd /store/snapshots
if [ -d "$1" ]; then mv -T -- "$1" ".gone-$1"; fi
rm -rf -- ".gone-$1"
sync -f .
