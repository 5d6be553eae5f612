#!/bin/sh
# Print the metadata files of every snapshot directory of the stores mounted at
# /st/<i> (the indexes are the arguments after $1, the byte bound of one file).
# Between BEGIN and END: "<i>/<id>/ -" for each directory, then for each of its
# metadata files that is there "<i>/<id>/<file> <hex>" (od's spaced hex, one
# line), or "<i>/<id>/<file> !" when it is not a readable regular file. Names
# that are not snapshot ids are skipped.
B="$1"; shift
echo BEGIN
for i in "$@"; do
  for d in /st/"$i"/snapshots/*; do
    id=${d##*/}
    case "$id" in *[!0-9a-f]*|"") continue;; esac
    if [ ${#id} -ne 16 ] || [ ! -d "$d" ] || [ -L "$d" ]; then continue; fi
    echo "$i/$id/ -"
    for f in begun.json snapshot.json meta.json; do
      p="$d/$f"
      if [ -f "$p" ] && [ ! -L "$p" ]; then
        if x=$(od -An -v -tx1 -w"$B" -N "$B" -- "$p"); then
          echo "$i/$id/$f $x"
        else
          echo "$i/$id/$f !"
        fi
      elif [ -e "$p" ] || [ -L "$p" ]; then
        echo "$i/$id/$f !"
      fi
    done
  done
done
echo END
