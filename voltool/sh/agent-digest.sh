#!/bin/sh
# The format-2 tree digest of the tree $1, as a stored snapshot of it would have,
# leaving out the top-level entries named by the other arguments (a running
# restore's own working directories). The agent scans the tree; one line, the
# digest, is printed. The agent's stderr (its events) is the helper's.
tree="$1"; shift
python3 -I -m voltool_agent scan "$tree" > /tmp/scan
code=$?
[ "$code" -eq 0 ] || exit "$code"
python3 -I - /tmp/scan "$@" <<'PY' || exit 3
import json, sys

from voltool_agent.digest import TreeDigest
from voltool_agent.entry import Entry

left_out = set(sys.argv[2:])
digest = TreeDigest()
with open(sys.argv[1], "rb") as f:
    for raw in f:
        path = json.loads(raw)["path"]
        if isinstance(path, str) and path.split("/", 1)[0] in left_out:
            continue
        digest.add(Entry.parse(raw))
print(digest.hexdigest())
PY
