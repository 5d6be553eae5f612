#!/bin/sh
# After restic restored a pulled snapshot into /pull/$1: refuse a volume that holds
# anything else (a hostile repository's tree that wrote beside its target), then run
# the agent's mend of tree $2 from manifest $3 (voltool/agent/mend.py).
found=$(ls -A /pull)
if [ "$found" != "$1" ]; then
  echo '{"event": "fatal", "message": "the repository wrote outside its target"}' >&2
  exit 3
fi
exec python3 -I -m voltool_agent mend "$2" "$3"
