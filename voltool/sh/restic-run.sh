#!/bin/sh
# Run restic with the secrets voltool wrote into this helper before it started
# (voltool/engine/restic.py): /.voltool-secrets/repository, password and, if
# given, env (export NAME='value' lines, written by voltool). The two files are
# opened and the directory removed before anything else, then the env file is
# read (from a descriptor: it is gone by then) into the environment; restic
# reads the two files through the descriptors kept open for it. Nothing of
# them is left on the helper's filesystem while restic runs.
# $1: the directory restic runs in; $2: "run" (restic $3...) or "push" (restic
# backup $3..., with the tag voltool.pending, which is removed once the backup
# succeeded, so that a snapshot restic could not finish is never taken for one).
set -eu
readonly secrets=/.voltool-secrets
exec 3<"$secrets/password" 4<"$secrets/repository"
if [ -f "$secrets/env" ]; then exec 5<"$secrets/env"; else exec 5</dev/null; fi
rm -rf "$secrets"
cd "$1"
mode="$2"
shift 2
set -a
# shellcheck disable=SC1091
. /proc/self/fd/5
set +a
exec 5<&-
restic() {
  command restic --no-cache --password-file /proc/self/fd/3 --repository-file /proc/self/fd/4 "$@"
}
if [ "$mode" = run ]; then
  restic "$@"
  exit $?
fi
[ "$mode" = push ] || exit 2
code=0
out=$(restic backup --tag voltool.pending "$@") || code=$?
printf '%s\n' "$out"
if [ "$code" -ne 0 ]; then exit "$code"; fi
id=$(printf '%s\n' "$out" | sed -n 's/.*"snapshot_id":"\([0-9a-f]*\)".*/\1/p' | tail -n 1)
if [ -z "$id" ]; then
  echo "restic's backup named no snapshot" >&2
  exit 1
fi
restic tag --remove voltool.pending "$id" >&2
