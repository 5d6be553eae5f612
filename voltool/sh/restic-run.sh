#!/bin/sh
# Run restic with the secrets voltool wrote into this helper before it started
# (voltool/engine/restic.py): /.voltool-secrets/repository, password and, if
# given, env (export NAME='value' lines, written by voltool). They are opened,
# read into the environment, and removed before restic starts, so nothing of
# them is left on the helper's filesystem while it runs; restic reads the two
# files through the descriptors kept open for it.
# $1: the directory restic runs in; the rest: restic's arguments.
set -eu
s=/.voltool-secrets
if [ -f "$s/env" ]; then
  set -a
  # shellcheck disable=SC1091
  . "$s/env"
  set +a
fi
exec 3<"$s/password" 4<"$s/repository"
rm -rf "$s"
cd "$1"
shift
exec restic --no-cache --password-file /proc/self/fd/3 --repository-file /proc/self/fd/4 "$@"
