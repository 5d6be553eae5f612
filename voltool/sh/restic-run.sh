#!/bin/sh
# Run restic with the secrets voltool wrote into this helper before it started
# (voltool/engine/restic.py): /.voltool-secrets/repository, password and, if
# given, env (export NAME='value' lines, written by voltool). The two files are
# opened and the directory removed before anything else, then the env file is
# read (from a descriptor: it is gone by then) into the environment; restic
# reads the two files through the descriptors kept open for it. Nothing of
# them is left on the helper's filesystem while restic runs.
# $1: the directory restic runs in; $2: the mode:
#   run     restic $3...
#   push    restic backup $3..., tagged voltool.pending (a snapshot restic could not
#           finish, or one not yet confirmed, is never taken for a copy);
#   finish  restic tag --remove voltool.pending $3... (the confirmed pushes), tried
#           again while another restic holds the repository's lock, then the listing
#           of voltool's snapshots (restic snapshots --json --tag voltool).
set -eu
readonly secrets=/.voltool-secrets
exec 3<"$secrets/password" 4<"$secrets/repository"
if [ -f "$secrets/env" ]; then exec 5<"$secrets/env"; else exec 5</dev/null; fi
rm -rf "$secrets"
cd "$1" 2>/dev/null || exit 66  # a snapshot deleted before restic began (push)
mode="$2"
shift 2
set -a
# shellcheck disable=SC1091
. /proc/self/fd/5
set +a
exec 5<&-
# restic itself runs as the helper's first process where it can (exec): then the
# SIGINT voltool sends on Ctrl-C reaches it, and it removes its lock before it exits.
common="--no-cache --password-file /proc/self/fd/3 --repository-file /proc/self/fd/4"
# shellcheck disable=SC2086 # $common: options, split on purpose
case "$mode" in
  run)
    exec restic $common "$@"
    ;;
  push)
    exec restic $common backup --tag voltool.pending "$@"
    ;;
  finish)
    tries=0
    until restic $common tag --remove voltool.pending "$@" >&2; do
      tries=$((tries + 1))
      if [ "$tries" -ge 10 ]; then exit 4; fi
      sleep 3
    done
    exec restic $common snapshots --json --tag voltool
    ;;
  *)
    exit 2
    ;;
esac
