#!/bin/sh
# Exit 0 if the store mounted at /store holds no snapshot directory any more:
# its snapshots directory is absent, or there and empty. One that cannot be
# read (or is not a directory) is not known to be empty.
[ -e /store/snapshots ] || [ -L /store/snapshots ] || exit 0
[ -d /store/snapshots ] && [ ! -L /store/snapshots ] || exit 1
found=$(ls -A /store/snapshots) || exit 1
[ -z "$found" ]
