"""Running restic next to the data: one helper of the agent image per restic command.

The helper mounts what the command needs (a store read-only for a push, a
temporary volume for a pull) and, for a repository on the engine's host, that
directory at /repository. It joins the remote's network (none for a local
repository). The repository, its password and any backend credentials are
written into the helper before it starts, as files root alone reads
(Engine.run's `files`); voltool/sh/restic-run.sh reads and removes them before
restic starts. So no secret is in the helper's command, labels or configured
environment (`docker inspect`), nor in what voltool prints: restic's words
pass through `remotes.redact` first.

What restic says is mapped to voltool's errors: a repository that cannot be
opened (unreachable, not initialised) or a wrong password is RemoteError
(exit 13), a repository restic finds damaged IntegrityError (exit 6), one that
another restic holds locked Busy (exit 4).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from voltool.engine import labels as L
from voltool.engine.client import Mount, RunResult
from voltool.errors import (
    Busy,
    IntegrityError,
    NoSpace,
    NotFound,
    RemoteError,
    UsageError,
    VoltoolError,
)
from voltool.remotes import Remote, Secrets, redact
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.words import quoted

SECRETS_DIR = "/.voltool-secrets"  # restic-run.sh's
REPOSITORY_MOUNT = "/repository"  # where a local repository is mounted
INTERRUPT_GRACE = 10.0  # seconds restic gets to remove its lock when cut short by Ctrl-C


@dataclass(frozen=True)
class Repository:
    """A remote and the secrets that open it: what a restic helper is given."""

    remote: Remote
    secrets: Secrets

    def files(self) -> dict[str, bytes]:
        location = REPOSITORY_MOUNT if self.remote.path else self.remote.repo
        files = {
            f"{SECRETS_DIR}/repository": location.encode() + b"\n",
            f"{SECRETS_DIR}/password": self.secrets.password + b"\n",
        }
        if self.secrets.env:
            files[f"{SECRETS_DIR}/env"] = self.secrets.env_script()
        return files

    def mounts(self, read_only: bool = False) -> list[Mount]:
        path = self.remote.path
        return [Mount(path, REPOSITORY_MOUNT, read_only, bind=True)] if path else []


def restic_version(rt: Runtime, image: str) -> str:
    """The restic version the agent image carries; UsageError if it carries none."""
    version = rt.engine.image(image).labels.get(L.IMAGE_RESTIC)
    if not version:
        raise UsageError(
            "the agent image has no restic, because this host had none when it was built: "
            "install restic (Debian: apt-get install restic), then run `voltool helper --build`"
        )
    return version


def run(
    rt: Runtime,
    image: str,
    repo: Repository,
    op: str,
    args: list[str],
    *,
    mounts: list[Mount] | None = None,
    cwd: str = "/",
    mode: str = "run",
    read_only: bool = False,
) -> RunResult:
    """Run `restic ARGS` in a helper of `image` (in `cwd`, with `mounts` and the
    repository's); returns what it did, whatever its exit status. `mode` "push": ARGS
    are `backup`'s, and the snapshot is tagged voltool.pending; "finish": ARGS are the
    restic ids whose pending tag goes, and the listing follows (restic-run.sh).
    `read_only`: the command only reads the repository (run with --no-lock; a
    repository in a directory is mounted read-only)."""
    return rt.engine.run(
        image,
        [*(mounts or []), *repo.mounts(read_only)],
        rt.helper_labels(op),
        program("restic-run"),
        [cwd, mode, *(["--no-lock"] if read_only else []), *args],
        network=repo.remote.helper_network,
        files=repo.files(),
        keep_no_logs=True,
        interrupt_grace=INTERRUPT_GRACE,
    )


def checked(result: RunResult, repo: Repository, what: str) -> RunResult:
    """`result` if restic succeeded, else the error its words call for."""
    if result.exit_code == 0:
        return result
    raise failure(result, repo, what)


def said(result: RunResult, repo: Repository) -> str:
    """restic's last words on stderr, one line, secrets redacted."""
    text = redact(result.stderr.decode(errors="replace"), repo.secrets)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    fatal = [ln for ln in lines if ln.startswith("Fatal:")]
    line = (fatal or lines or [f"restic exited with {result.exit_code}"])[-1]
    return line.removeprefix("Fatal: ")[:400]


def failure(result: RunResult, repo: Repository, what: str) -> VoltoolError:
    text = redact(result.stderr.decode(errors="replace"), repo.secrets)
    name = quoted(repo.remote.name)
    words = said(result, repo)
    if "wrong password" in text:
        return RemoteError(f"{what}: the password of remote {name} does not open its repository")
    if "unable to open config file" in text or "Is there a repository" in text:
        return RemoteError(
            f"{what}: no repository at remote {name} ({repo.remote.shown}), or it cannot be "
            f"reached: {words.splitlines()[0]}"
        )
    if "repository is already locked" in text:
        return Busy(f"{what}: the repository of remote {name} is locked by another restic")
    if "no space left on device" in text:
        return NoSpace(f"{what}: no space left on device")
    if "not found in snapshot" in text or "no matching ID found" in text:
        return NotFound(f"{what}: {words}")
    if any(
        sign in text
        for sign in (
            "ciphertext verification failed",
            "repository contains errors",
            "hash does not match",
            "checksum",
            "is damaged",
            "invalid data returned",
        )
    ):
        return IntegrityError(f"{what}: the repository of remote {name} is damaged: {words}")
    return RemoteError(f"{what}: restic failed: {words}")


def json_lines(stdout: bytes) -> list[dict[str, Any]]:
    """The JSON objects restic printed one a line (--json); anything else is skipped."""
    found = []
    for raw in stdout.splitlines():
        raw = raw.strip()
        if not raw.startswith(b"{"):
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def json_value(stdout: bytes, what: str) -> Any:
    """The one JSON document restic printed (`snapshots --json`)."""
    for raw in stdout.splitlines():
        raw = raw.strip()
        if raw.startswith((b"[", b"{")):
            try:
                return json.loads(raw)
            except ValueError:
                break
    raise RemoteError(f"{what}: restic printed no JSON")
