"""Every error voltool reports, and the one table of exit codes.

Each error class carries its own exit code; the CLI catches `VoltoolError` once
and exits with `err.exit_code`. The library raises these and nothing else for
conditions a user can act on; anything else is a bug (exit 1).
"""

from __future__ import annotations

import enum

from voltool.words import quoted


class ExitCode(enum.IntEnum):
    """The exit codes voltool documents (README, "Exit codes")."""

    OK = 0
    ERROR = 1  # unexpected failure: a bug or an engine error we did not foresee
    DIFFERENCES = 1  # diff --exit-code: something changed (not a failure)
    USAGE = 2  # bad arguments, invalid names, ambiguous references
    NOT_FOUND = 3  # no such volume or snapshot
    BUSY = 4  # the volume's lock is held by another operation
    PRECONDITION = 5  # ETag or digest mismatch, pinned snapshot, refused state
    INTEGRITY = 6  # invalid or corrupt archive or snapshot
    NO_SPACE = 7  # not enough space for the operation
    ENGINE = 8  # Docker Engine unreachable
    PENDING = 9  # an interrupted operation must be recovered first
    DECLINED = 10  # the user declined the confirmation
    NEEDS_CONFIRMATION = 11  # no terminal to confirm on and no --yes
    FILE = 12  # a file the user named cannot be read or written (permissions, read-only)
    REMOTE = 13  # a remote repository cannot be reached, refuses the password, or is not there
    INTERRUPTED = 130  # Ctrl-C


class VoltoolError(Exception):
    """Base of every error a user may see; `str(err)` is a one-line message."""

    exit_code: ExitCode = ExitCode.ERROR


class UsageError(VoltoolError):
    """The request itself is wrong (bad name, ambiguous reference, bad option)."""

    exit_code = ExitCode.USAGE


class AgentImageFailed(UsageError):
    """The agent image cannot be made from this host's Python, or fails its check.

    Exit 2, as for a helper image that cannot run voltool's helpers."""


class NotFound(VoltoolError):
    """A volume or snapshot that was named does not exist."""

    exit_code = ExitCode.NOT_FOUND


class AmbiguousReference(UsageError):
    """A snapshot reference matches more than one snapshot."""

    def __init__(
        self, ref: str, candidates: list[str], what: str = "snapshot reference", hint: str = ""
    ) -> None:
        self.candidates = candidates
        super().__init__(
            f"{what} {quoted(ref)} is ambiguous; it matches: {', '.join(candidates)}{hint}"
        )


class Busy(VoltoolError):
    """The volume is locked by another operation."""

    exit_code = ExitCode.BUSY


class PreconditionFailed(VoltoolError):
    """A stated precondition does not hold (ETag, digest, pin)."""

    exit_code = ExitCode.PRECONDITION


class IntegrityError(VoltoolError):
    """An archive or snapshot is invalid, corrupt or hostile."""

    exit_code = ExitCode.INTEGRITY


class ArchiveRejected(IntegrityError):
    """One tar entry broke one validation rule."""

    def __init__(self, entry: str, rule: str) -> None:
        self.entry = entry
        self.rule = rule
        super().__init__(f"archive rejected at entry {quoted(entry)}: {rule}")


class NoSpace(VoltoolError):
    """The target filesystem has too little room."""

    exit_code = ExitCode.NO_SPACE


class FileError(VoltoolError):
    """A file or directory the user named cannot be read or written, or a pipe's reader left."""

    exit_code = ExitCode.FILE


class EngineUnreachable(VoltoolError):
    """The Docker Engine cannot be reached."""

    exit_code = ExitCode.ENGINE


class PendingOperation(VoltoolError):
    """An interrupted operation on the volume must be recovered first."""

    exit_code = ExitCode.PENDING


class Declined(VoltoolError):
    """The user said no at the confirmation prompt."""

    exit_code = ExitCode.DECLINED


class NeedsConfirmation(VoltoolError):
    """A destructive command was run without a terminal and without --yes."""

    exit_code = ExitCode.NEEDS_CONFIRMATION


class RemoteError(VoltoolError):
    """A remote repository cannot be reached, refuses its password, or is not initialised."""

    exit_code = ExitCode.REMOTE


class EngineError(VoltoolError):
    """The engine refused a request in a way voltool did not foresee."""

    exit_code = ExitCode.ERROR
