#!/bin/sh
# Remove snapshot $1's directory from the store mounted at /store. Renamed
# first, so that a delete cut short never leaves half a snapshot listed; what
# such a delete left (.gone-*, never listed) is removed too: every delete of a
# store holds its lock, so no one else is removing it.
# Nothing is followed through a symlink: /store/snapshots must not be one, and
# rm -rf removes a symlink, never what it points to.
set -e
[ ! -L /store/snapshots ] || { echo "/store/snapshots is a symlink" >&2; exit 3; }
# A store made for a snapshot whose copy never began has no snapshots directory:
# there is nothing to remove.
[ -e /store/snapshots ] || exit 0
cd /store/snapshots
if [ -d "$1" ] || [ -L "$1" ]; then mv -T -- "$1" ".gone-$1"; fi
rm -rf -- ".gone-$1"
for g in .gone-*; do
  if [ -e "$g" ] || [ -L "$g" ]; then rm -rf -- "$g"; fi
done
sync -f .
