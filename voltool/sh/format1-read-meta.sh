#!/bin/sh
# "BEGIN", then one line per file that is there: "<id>/<name> <content in hex>"
# (od's spaced hex, all on one line), or "<id>/<name> !" when it is not a
# regular file or cannot be read (errors other than "No such file" mean
# "there, but unreadable", never "absent"); "END" last. Output cut at either
# end is an error. od reads one byte past the bound, so that an oversized file
# shows as one. One od per file and nothing else forked, in two workers (each
# must finish, or nothing is printed): listing 200 snapshots must not take
# seconds of process starts.
cd /s || exit 1
one() {
  for d in "$@"; do
    for f in snapshot.json meta.json; do
      p="$d/$f"
      if [ -f "$p" ] && [ ! -L "$p" ]; then
        if x=$(od -An -v -tx1 -w"$B" -N "$B" -- "$p"); then echo "$p $x"; else echo "$p !"; fi
      elif [ -e "$p" ] || [ -L "$p" ]; then
        echo "$p !"
      else
        case "$(ls -d -- "$p" 2>&1)" in *"No such file"*) ;; *) echo "$p !";; esac
      fi
    done
  done
  echo DONE
}
B="$1"; i=0; a=""; b=""
# The directories are snapshot ids (16 hex digits): safe to split on spaces.
for d in *; do
  if [ $((i % 2)) -eq 0 ]; then a="$a $d"; else b="$b $d"; fi; i=$((i + 1))
done
# Split on purpose: snapshot ids (the directory names) are hex, never spaced or globbed.
# shellcheck disable=SC2086
one $a > /tmp/r1 &
# shellcheck disable=SC2086
one $b > /tmp/r2
wait
[ "$(tail -n 1 /tmp/r1)" = DONE ] && [ "$(tail -n 1 /tmp/r2)" = DONE ] || exit 1
echo BEGIN; grep -hv '^DONE$' /tmp/r1 /tmp/r2; echo END
