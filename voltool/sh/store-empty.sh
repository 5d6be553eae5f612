#!/bin/sh
# Exit 0 if the store mounted at /store holds no snapshot directory any more.
[ -z "$(ls -A /store/snapshots 2>/dev/null)" ]
