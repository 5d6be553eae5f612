#!/bin/sh
# For each mount point given: free blocks, used blocks, root mtime, free inodes, device;
# "-" between them. (du is left out for all but the first: it reads the whole tree.)
first=1
for d in "$@"; do
  [ "$first" = 1 ] || echo -
  df -Pk "$d" | tail -n 1
  if [ "$first" = 1 ]; then du -sk "$d" | cut -f1; else echo 0; fi
  stat -c %Y "$d"
  df -Pi "$d" | tail -n 1
  stat -c %d "$d"
  first=0
done
