#!/bin/sh
# How the tree $1 differs from the manifest $2: the agent compares them, and
# one JSON line sums its differences up: {"missing": N, "extra": N,
# "changed": N, "first": [[path, kind, fields]...]}, the first $3 of them,
# "missing" meaning in the manifest only. The agent's stderr is the helper's.
if [ -L "$2" ] || [ ! -f "$2" ]; then
  echo '{"event": "fatal", "message": "the manifest is not a regular file"}' >&2
  exit 3
fi
python3 -I -m voltool_agent verify "$1" "$2" > /tmp/differences
code=$?
python3 -I - /tmp/differences "$3" <<'PY' || exit 3
import json, sys

counts = {"missing": 0, "extra": 0, "changed": 0}
first, last = [], None
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = json.loads(raw)
        kind, path = line["mismatch"], line["path"]
        if kind == "changed" and last is not None and last[:2] == [path, "changed"]:
            last[2].append(line["field"])
            continue
        counts[kind] += 1
        last = [path, kind, [line["field"]] if kind == "changed" else []]
        if len(first) < int(sys.argv[2]):
            first.append(last)
print(json.dumps({**counts, "first": first}))
PY
[ "$code" -le 1 ] || exit "$code"
