#!/bin/sh
# Stage a stored snapshot for a restore: the agent copies /snap/$2 (its data,
# snapshots/<id>/data) into /v/$1, a new directory of the target, which stays
# 0700 until the swap. $3: "special" lets device nodes and FIFOs through,
# anything else refuses them, in the data before the copy and in what was
# copied. The copy's manifest is not needed (its digest is in the summary).
fail() { printf '{"event": "fatal", "message": "%s"}\n' "$1" >&2; exit 3; }
special() { [ -n "$(find "$1" \( -type b -o -type c -o -type p \) -print -quit)" ]; }
s="/snap/$2"
for p in /snap/snapshots "${s%/data}" "$s"; do
  if [ -L "$p" ] || [ ! -d "$p" ]; then fail "the snapshot's data is not a directory of its store"; fi
done
if [ "$3" != special ] && special "$s/"; then
  fail "the snapshot holds a device node or FIFO: restoring it needs --allow-special"
fi
python3 -I -m voltool_agent copy --no-sync --private-root "$s" "/v/$1" > /dev/null
code=$?
if [ "$code" -eq 0 ] && [ "$3" != special ] && special "/v/$1/"; then
  fail "the staged copy holds a device node or FIFO: restoring it needs --allow-special"
fi
exit "$code"
