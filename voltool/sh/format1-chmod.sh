#!/bin/sh
# chmod MODE PATH, for each pair of arguments: setuid/setgid bits the engine dropped
# on hard-linked files when it extracted a tree (voltool.store.format1, fix_modes).
while [ "$#" -gt 1 ]; do chmod "$1" "$2" || exit 1; shift 2; done
