"""What the agent says besides the manifest: stderr JSON lines, counts and exit codes.

Every line the agent writes to stderr is one JSON object with an "event" key:

    {"event": "error", "path": P, "op": "open", "errno": 13, "message": "..."}
        an entry could not be read or written; it is left out of the result
    {"event": "warning", "path": P, "what": "..."}
        something the caller may want to know (a file that kept changing, ...)
    {"event": "summary", "command": "scan", "digest": "...", ...counts}
        the last line of a run that finished its walk (exit 0 or 1), with its
        peak resident set ("peak_rss_kib") where /proc says
    {"event": "fatal", "message": "..."}
        the run stopped early (exit 2 or 3); no summary follows
    {"event": "held", "step": "..."}
        crash tests only: the agent stopped for good at that step (`hold_for_tests`)

P is spelled as `names.pack` spells it.
"""

from __future__ import annotations

import errno as errnos
import json
import os
import signal
import sys
from dataclasses import dataclass, fields
from typing import Any, TextIO

from .names import pack

EXIT_OK = 0  # done; every entry is in the result
EXIT_ENTRIES = 1  # done, but some entries were left out (errors) or verify found mismatches
EXIT_USAGE = 2  # bad arguments; nothing was done
EXIT_FATAL = 3  # stopped early: the result is incomplete and must not be used


class Fatal(Exception):
    """The run cannot go on (destination unusable, corrupt previous manifest, ...)."""


@dataclass
class Counts:
    """What one run did; printed in the summary line."""

    entries: int = 0  # manifest entries written (or, for verify, entries of the tree)
    files: int = 0  # regular files among them
    bytes_hashed: int = 0  # content bytes read and hashed
    bytes_copied: int = 0  # content bytes written into the destination
    bytes_linked: int = 0  # content bytes hard-linked from the previous tree instead
    files_linked: int = 0  # files hard-linked from the previous tree
    vanished: int = 0  # entries gone (or turned into a directory) before they could be read
    unstable: int = 0  # files that kept changing while read; kept as last read
    errors: int = 0  # entries left out because of an error
    mismatches: int = 0  # verify: differences found


def peak_rss_kib() -> int | None:
    """This process's peak resident set (VmHWM), in KiB; None where /proc does not say."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Reporter:
    """Writes the stderr lines, and counts errors as it goes."""

    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out if out is not None else sys.stderr
        self.counts = Counts()
        # Read once: hold_for_tests is asked once per file copied.
        self._held = frozenset(os.environ.get("VOLTOOL_TEST_HOLD_AT", "").split(","))

    def _emit(self, obj: dict[str, Any]) -> None:
        self._out.write(json.dumps(obj, sort_keys=True, ensure_ascii=True) + "\n")
        self._out.flush()

    def error(self, path: bytes, op: str, err: OSError | str) -> None:
        self.counts.errors += 1
        line: dict[str, Any] = {"event": "error", "path": pack(path), "op": op}
        if isinstance(err, OSError):
            line["errno"] = err.errno
            line["message"] = errnos.errorcode.get(err.errno or 0, "") + " " + str(err.strerror)
        else:
            line["message"] = err
        self._emit(line)

    def warning(self, path: bytes, what: str) -> None:
        self._emit({"event": "warning", "path": pack(path), "what": what})

    def summary(self, command: str, **more: Any) -> None:
        counts = {f.name: getattr(self.counts, f.name) for f in fields(self.counts)}
        peak = {"peak_rss_kib": rss} if (rss := peak_rss_kib()) is not None else {}
        self._emit({"event": "summary", "command": command, **counts, **peak, **more})

    def fatal(self, message: str) -> None:
        self._emit({"event": "fatal", "message": message})

    def hold_for_tests(self, step: str) -> None:
        """Crash tests: with VOLTOOL_TEST_HOLD_AT naming `step` (voltool passes it into
        the helper only when it is set in its own environment), say so and stop here, the
        first time, until SIGUSR1 (or for good), so that a test kills the helper, or
        voltool, or acts, at a known point of a copy however fast the machine. Never set
        in normal use."""
        if step not in self._held:
            return
        self._held -= {step}
        # Blocked before it is said, so a SIGUSR1 sent at once is waited for, not lost.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
        self._emit({"event": "held", "step": step})
        signal.sigwait({signal.SIGUSR1})
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
