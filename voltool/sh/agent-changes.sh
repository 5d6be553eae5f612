#!/bin/sh
# What restoring the snapshot whose manifest is $2 would change in the tree $1:
# the agent compares them, and one JSON line sums its differences up
# ({"added": N, "changed": N, "removed": N, "first": [[path, kind, fields]...]},
# at most $3 of them). The agent's stderr is the helper's.
python3 -I -m voltool_agent verify "$1" "$2" > /tmp/differences
code=$?
python3 -I - /tmp/differences "$3" <<'PY' || exit 3
import json, sys

counts = {"added": 0, "changed": 0, "removed": 0}
first, last = [], None
kinds = {"missing": "added", "extra": "removed", "changed": "changed"}
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = json.loads(raw)
        kind, path = kinds[line["mismatch"]], line["path"]
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
