#!/bin/sh
# Hash the stored tree $1 again and compare it with its manifest $2 (the
# agent's verify, the tree's hard-link groups being the manifest's: its files'
# link counts include other snapshots' links); print at most $3 of its
# difference lines, then exit as it did.
if [ -L "$2" ] || [ ! -f "$2" ]; then
  echo '{"event": "fatal", "message": "the manifest is not a regular file"}' >&2
  exit 3
fi
python3 -I -m voltool_agent verify --stored "$1" "$2" > /tmp/differences
code=$?
head -n "$3" /tmp/differences
exit "$code"
