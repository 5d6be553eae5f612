#!/bin/sh
# Stage a stored snapshot for a restore: the agent copies /snap/$2 (its data,
# snapshots/<id>/data) into /v/$1, a new directory of the target, which stays
# 0700 until the swap. $3: "special" lets device nodes and FIFOs through,
# anything else refuses them, in the data before the copy and in what was
# copied. Of the copy's manifest only the root's line is printed (its digest is in
# the summary): the swap gives the volume root that mode and owner, and voltool
# holds the snapshot's manifest to it. The snapshot's own manifest only tells
# the agent which files are hard-link groups (their link counts include other
# snapshots' links); what was copied is held to snapshot.json by its digest,
# and (--seal) read back once made: the target's containers run meanwhile.
fail() { printf '{"event": "fatal", "message": "%s"}\n' "$1" >&2; exit 3; }
special() { [ -n "$(find "$1" \( -type b -o -type c -o -type p \) -print -quit)" ]; }
s="/snap/$2"
for p in /snap/snapshots "${s%/data}" "$s"; do
  if [ -L "$p" ] || [ ! -d "$p" ]; then fail "the snapshot's data is not a directory of its store"; fi
done
m="${s%/data}/manifest.jsonl"
if [ -L "$m" ] || [ ! -f "$m" ]; then fail "the snapshot's manifest is not a regular file"; fi
if [ "$3" != special ] && special "$s/"; then
  fail "the snapshot holds a device node or FIFO: restoring it needs --allow-special"
fi
# The agent's exit code, not the reader's: busybox ash has pipefail.
# shellcheck disable=SC3040
set -o pipefail
python3 -I -m voltool_agent copy --no-sync --private-root --seal --groups "$m" "$s" "/v/$1" |
  { IFS= read -r root; printf '%s\n' "$root"; cat > /dev/null; }
code=$?
if [ "$code" -eq 0 ] && [ "$3" != special ] && special "/v/$1/"; then
  fail "the staged copy holds a device node or FIFO: restoring it needs --allow-special"
fi
exit "$code"
