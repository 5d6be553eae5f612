#!/bin/sh
# Put the staged tree $1 in place of the volume's top-level entries, which go into
# the old directory $2. Idempotent: run it again after a cut at any point and it
# finishes the swap. It works in /v (VOLTOOL_ROOT, for tests that run it on a
# scratch directory). $3 the marker, $4 root mode (octal), $5 root uid:gid,
# $6 root mtime, $7 the old root's mtime (empty if unknown), for the old directory;
# $8 "exact": the staging directory carries the root's times to the nanosecond
# (the agent staged it): the marker takes them over, and the root takes them from
# the marker (busybox touch -d knows whole seconds only).
set -e
cd "${VOLTOOL_ROOT:-/v}"
S="$1"; O="$2"; M="$3"
# No marker and no staging directory: this swap finished (and was cleaned up)
# or never had anything to put in place. Either way, touch nothing.
if [ ! -e "$M" ] && [ ! -d "$S" ]; then exit 0; fi
# The volume's own containers may write any name in it: a staging directory
# replaced by a symlink is not ours to empty, and a marker with no real old
# directory beside it was not made by this swap (phase 1 is not done).
if [ -L "$S" ]; then echo "the staging directory was replaced by a symlink" >&2; exit 4; fi
# (With the staging directory gone, phase 2 is done: a marker then stays, however
# it looks, so that nothing is ever moved out of place again.)
if { [ -e "$M" ] || [ -L "$M" ]; } && [ -d "$S" ] && { [ ! -d "$O" ] || [ -L "$O" ]; }; then
  rm -rf -- "$M"
fi
if [ -L "$O" ]; then echo "the old-data directory was replaced by a symlink" >&2; exit 4; fi
# Move $1 into a new directory of its own under the old data: never onto anything.
keep() {
  i=0
  while [ -e "$O/.voltool-late-$i" ] || [ -L "$O/.voltool-late-$i" ]; do i=$((i + 1)); done
  mkdir "$O/.voltool-late-$i"
  mv -T -- "$1" "$O/.voltool-late-$i/$1"
}
if [ ! -e "$M" ]; then
  # Phase 1: the user's top-level entries into the old directory.
  if [ ! -d "$O" ]; then
    mkdir "$O.new" 2>/dev/null || true
    chown "$(stat -c %u:%g .)" "$O.new"
    chmod "$(stat -c %a .)" "$O.new"
    mv -T "$O.new" "$O"
  fi
  # In bulk first, into an empty old directory only (the first run, not a rerun):
  # one mv, not one per entry, so that downtime does not grow with the number
  # of entries. Only an empty destination is safe: busybox mv -n replaces a
  # dangling symlink. The loop below, the authority, deals with what is left.
  if [ -z "$(ls -A -- "$O")" ]; then
    find . -mindepth 1 -maxdepth 1 ! -name "$S" ! -name "$O" ! -name "$M" ! -name "$O.new" \
      -print0 | xargs -0 -r mv -n -t "$O" -- 2>/dev/null || true
  fi
  for e in * .[!.]* ..?*; do
    { [ -e "$e" ] || [ -L "$e" ]; } || continue
    case "$e" in "$S"|"$O"|"$M"|"$O.new") continue;; esac
    # Already there: a rerun after something wrote that name again. Keep both.
    if [ -e "$O/$e" ] || [ -L "$O/$e" ]; then keep "$e"; else mv -T -- "$e" "$O/$e"; fi
  done
  # A time busybox cannot set must not jam the swap: mtimes are cosmetic here.
  if [ -n "$7" ]; then touch -d "@$7" "$O" 2>/dev/null || true; fi
  sync -f .
  : > "$M"
  if [ "$8" = exact ] && [ -d "$S" ]; then touch -r "$S" "$M" 2>/dev/null || true; fi
  sync -f .
fi
# Phase 2: the staged entries into place.
if [ -d "$S" ]; then
  # In bulk only if the top holds nothing but voltool's own three (a name with a
  # newline counts twice: no bulk then either). Counting lines is the point here.
  # shellcheck disable=SC2012
  if [ -d "$O" ] && [ -e "$M" ] && [ "$(ls -A | wc -l)" -eq 3 ]; then
    find "$S" -mindepth 1 -maxdepth 1 -print0 | xargs -0 -r mv -n -t . -- 2>/dev/null || true
  fi
  for e in "$S"/* "$S"/.[!.]* "$S"/..?*; do
    { [ -e "$e" ] || [ -L "$e" ]; } || continue
    n=${e#"$S"/}
    # Written by someone else since phase 1: kept with the old data, never lost.
    if [ -e "$n" ] || [ -L "$n" ]; then keep "$n"; fi
    mv -T -- "$e" "$n"
  done
  rmdir "$S"
fi
chown "$5" .
chmod "$4" .
touch -d "@$6" . 2>/dev/null || true
# Only a marker whose time agrees with $6 to the second is the root's, to the nanosecond.
if [ "$8" = exact ] && [ -e "$M" ] && [ "$(stat -c %Y "$M")" = "$6" ]; then
  touch -r "$M" . 2>/dev/null || true
fi
sync -f .
