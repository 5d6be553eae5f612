#!/bin/sh
# Run the agent: $1 is where its stdout goes ("-": the helper's own output),
# the rest are the agent's arguments. A file named $1 is only ever a whole
# result: written to "$1.part", renamed when the agent exits 0.
out="$1"; shift
if [ "$out" = - ]; then exec python3 -I -m voltool_agent "$@"; fi
python3 -I -m voltool_agent "$@" > "$out.part"
code=$?
if [ "$code" -eq 0 ]; then
  mv -f -- "$out.part" "$out" && sync -f "$out" || exit 3
else
  rm -f -- "$out.part"
fi
exit "$code"
