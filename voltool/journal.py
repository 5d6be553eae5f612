"""The write-ahead journal: append-only JSON lines, fsynced before each step they announce.

Invariant: for every operation that changed anything, the journal holds a
record of each step *before* that step starts, and a terminal record
("done", "failed" or "recovered") only after the operation's effects are
complete or undone. An operation with no terminal record is pending, and
`voltool recover` finishes or undoes it from what the records say.

A line torn by a crash (the last one, usually) is skipped and reported; it
cannot hide an earlier step, because every step is its own line.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voltool.errors import PendingOperation, VoltoolError
from voltool.owner import Owner, current

TERMINAL = frozenset({"done", "failed", "recovered"})


@dataclass
class Operation:
    """Everything the journal says about one operation, merged in order."""

    id: str
    kind: str
    volumes: list[str]
    steps: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    started: str = ""

    @property
    def finished(self) -> bool:
        return bool(self.steps) and self.steps[-1] in TERMINAL

    @property
    def owner(self) -> Owner | None:
        return Owner.parse(str(self.data.get("owner", "")))

    @property
    def interrupted(self) -> bool:
        """Unfinished, and the process that ran it is provably gone."""
        owner = self.owner
        return not self.finished and (owner is None or not owner.is_alive())

    def reached(self, step: str) -> bool:
        return step in self.steps


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def append(self, op: str, step: str, **data: Any) -> None:
        """Durably record that operation `op` reaches `step` (write, fsync, then return)."""
        record = {"op": op, "step": step, "at": _now(), **data}
        if step == "begin":
            record["owner"] = current().token()
        line = (json.dumps(record, sort_keys=True, ensure_ascii=True) + "\n").encode()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                # One write(2) of a whole line: concurrent appenders never interleave.
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise VoltoolError(f"cannot write the journal {self.path}: {e.strerror}") from None
        hold_for_tests(step)

    def records(self) -> Iterator[dict[str, Any]]:
        self.problems = []
        try:
            with open(self.path, "rb") as f:
                for n, raw in enumerate(f, 1):
                    try:
                        rec = json.loads(raw)
                        if not isinstance(rec, dict) or "op" not in rec or "step" not in rec:
                            raise ValueError
                    except ValueError:
                        self.problems.append(f"journal line {n} is unreadable and was skipped")
                        continue
                    yield rec
        except FileNotFoundError:
            return
        except OSError as e:
            raise VoltoolError(f"cannot read the journal {self.path}: {e.strerror}") from None

    def operations(self) -> dict[str, Operation]:
        ops: dict[str, Operation] = {}
        for rec in self.records():
            op = ops.get(rec["op"])
            if op is None:
                op = ops[rec["op"]] = Operation(
                    id=str(rec["op"]),
                    kind=str(rec.get("kind", "?")),
                    volumes=[str(v) for v in rec.get("volumes", [])],
                    started=str(rec.get("at", "")),
                )
            op.steps.append(str(rec["step"]))
            op.data.update({k: v for k, v in rec.items() if k not in ("op", "step", "at")})
        return ops

    def interrupted(self) -> list[Operation]:
        """Operations that will never finish by themselves: `voltool recover` must."""
        return [op for op in self.operations().values() if op.interrupted]

    def refuse_pending(self, volume: str) -> None:
        """Raise PendingOperation if an interrupted operation on `volume` awaits recover."""
        op = self.pending_on(volume)
        if op:
            raise PendingOperation(
                f"volume {volume!r} has an interrupted {op.kind} operation {op.id}; "
                "run `voltool recover`"
            )

    def pending_on(self, volume: str) -> Operation | None:
        """An interrupted operation on `volume`, if there is one."""
        for op in self.interrupted():
            if volume in op.volumes:
                return op
        return None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


_held: list[str] = []


def hold_for_tests(step: str) -> None:
    """Crash tests: wait at a named point (each journaled step, or `staging-data`), so a test
    can look, or SIGKILL us there.

    With VOLTOOL_TEST_HOLD_AT=<step> and VOLTOOL_TEST_HOLD_FILE=<path>, the
    process writes its pid to the file and waits until the file is removed,
    the first time it reaches that step. Never set in normal use.
    """
    if os.environ.get("VOLTOOL_TEST_HOLD_AT") != step or _held:
        return
    _held.append(step)
    hold = Path(os.environ.get("VOLTOOL_TEST_HOLD_FILE", ""))
    if not hold.name:
        return
    import time

    hold.write_text(str(os.getpid()))
    while hold.exists():
        time.sleep(0.02)
