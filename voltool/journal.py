"""The write-ahead journal: every step of an operation recorded durably before it starts.

Invariant: for every operation that changed anything, the journal holds a
record of each step *before* that step starts, and a terminal record
("done", "failed" or "recovered") only after the operation's effects are
complete or undone. An operation with no terminal record is pending, and
`voltool recover` finishes or undoes it from what the records say.

The records live in the engine (voltool.engine.records), beside the locks, so that
anyone who reaches the engine can recover: another user, another `$HOME`,
another host. A local file in the state directory logs the same records for
people to read; nothing depends on it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from voltool.errors import PendingOperation, VoltoolError
from voltool.ids import is_valid_id
from voltool.owner import Owner, current
from voltool.words import quoted


class Kind(StrEnum):
    """What an operation is; recover has a planner for each."""

    SNAPSHOT = "snapshot"
    RESTORE = "restore"
    IMPORT = "import"
    MIGRATE = "migrate"


class Step(StrEnum):
    """The steps operations journal, each before it is carried out (see the operations'
    own docstrings for their order)."""

    BEGIN = "begin"
    QUIESCE = "quiesce"  # snapshot: the containers it pauses or stops
    STOPPING = "stopping"  # one container's stop is about to be asked for
    RESUMED = "resumed"
    STREAM = "stream"  # a snapshot volume is being filled
    CREATE = "create"  # restore: the target volume is created
    STOP = "stop"  # restore: the containers it stops
    STAGE = "stage"
    STAGED = "staged"
    CHECK = "check"  # restore --if-match
    SWAP = "swap"
    SWAPPED = "swapped"
    START = "start"
    STARTED = "started"
    SAVE = "save"  # the old data, into a pre-restore snapshot
    SAVED = "saved"
    CLEANUP = "cleanup"
    CHECKED = "checked"  # migrate: the copy agrees with the snapshot it copies
    REVIVED = "revived"  # recover brought the containers back
    DONE = "done"
    FAILED = "failed"
    RECOVERED = "recovered"


TERMINAL = frozenset({Step.DONE, Step.FAILED, Step.RECOVERED})
# What no record but an operation's first "begin" may say (besides all it says).
_FIXED_AT_BEGIN = frozenset({"op", "step", "at", "kind", "volumes", "owner", "target", "create"})


@dataclass
class Operation:
    """Everything the journal says about one operation, merged in order."""

    id: str
    kind: str
    volumes: list[str]
    steps: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    started: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)  # every record, in order

    @property
    def finished(self) -> bool:
        return any(step in TERMINAL for step in self.steps)

    @property
    def owner(self) -> Owner | None:
        return Owner.parse(str(self.data.get("owner", "")))

    @property
    def interrupted(self) -> bool:
        """Unfinished, and the process that ran it is provably gone."""
        owner = self.owner
        return not self.finished and (owner is None or not owner.is_alive())

    def reached(self, step: Step) -> bool:
        return step in self.steps

    def all_of(self, step: str, key: str) -> list[Any]:
        """The value of `key` in every record of `step`, in order."""
        return [r[key] for r in self.records if r.get("step") == step and key in r]


class RecordStore(Protocol):
    """Where the journal's records are kept."""

    problems: list[str]

    def write(self, record: dict[str, Any], volumes: list[str]) -> None: ...

    def read(self) -> Iterator[dict[str, Any]]: ...

    def forget(self, op: str) -> None: ...


class FileRecords:
    """Records as JSON lines appended to a local file (the log; also a store for tests).

    A line torn by a crash (the last one, usually) is skipped and reported; it
    cannot hide an earlier step, because every step is its own line.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def write(self, record: dict[str, Any], volumes: list[str]) -> None:
        """Append one line durably (write, fsync, then return)."""
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

    def read(self) -> Iterator[dict[str, Any]]:
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

    def forget(self, op: str) -> None:
        """A log keeps everything."""


class Journal:
    """Appends records to a store (the engine's, in use) and copies them to a local log.

    The log is best effort: a state directory that cannot be written costs the
    log, never an operation; `warn` hears of it once.
    """

    def __init__(
        self,
        store: RecordStore,
        log: FileRecords | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.log = log
        self._warn = warn
        self._log_failed = False
        self._volumes: dict[str, list[str]] = {}

    @property
    def problems(self) -> list[str]:
        return self.store.problems

    def append(self, op: str, step: Step, **data: Any) -> None:
        """Durably record that operation `op` reaches `step` (stored, then return)."""
        record = {"op": op, "step": step, "at": _now(), **data}
        if step == "begin":
            record["owner"] = current().token()
            self._volumes[op] = [str(v) for v in data.get("volumes", [])]
        self.store.write(record, self._volumes.get(op, []))
        self._to_log(record)
        if step in TERMINAL:
            self.forget(op)
        hold_for_tests(step)

    def forget(self, op: str) -> None:
        """Drop a finished operation's records from the store; what stays, recover removes."""
        with contextlib.suppress(VoltoolError):
            self.store.forget(op)

    def _to_log(self, record: dict[str, Any]) -> None:
        if self.log is None or self._log_failed:
            return
        try:
            self.log.write(record, [])
        except VoltoolError as e:
            self._log_failed = True
            if self._warn:
                self._warn(f"{e}; the operation goes on (its record is in the engine)")

    def operations(self) -> dict[str, Operation]:
        """Every operation the store holds records of, its records merged in order.

        What an operation is (its kind, volumes and owner) is read from its "begin"
        record only: a later record cannot make a live operation look dead, nor
        point one at other volumes.
        """
        ops: dict[str, Operation] = {}
        for rec in self.store.read():
            if not is_valid_id(str(rec.get("op", ""))):
                continue
            op = ops.get(rec["op"])
            if op is None:
                op = ops[rec["op"]] = Operation(id=str(rec["op"]), kind="?", volumes=[])
            step = str(rec["step"])
            begin = next((r for r in op.records if r.get("step") == "begin"), None)
            if step == "begin" and begin is None:
                volumes = rec.get("volumes")
                op.kind = str(rec.get("kind", "?"))
                op.volumes = [str(v) for v in volumes] if isinstance(volumes, list) else []
                op.started = str(rec.get("at", ""))
                fixed: set[str] | frozenset[str] = {"op", "step", "at"}
            else:
                # A later record adds what its step says; it never changes what the
                # operation said it would do (its safety snapshot, --offline, ...).
                fixed = _FIXED_AT_BEGIN | set(begin or ())
            op.steps.append(step)
            op.records.append(rec)
            op.data.update({k: v for k, v in rec.items() if k not in fixed})
        for op in ops.values():
            self._volumes.setdefault(op.id, op.volumes)
        return ops

    def interrupted(self) -> list[Operation]:
        """Operations that will never finish by themselves: `voltool recover` must."""
        return [
            op for op in self.operations().values() if op.interrupted and op.reached(Step.BEGIN)
        ]

    def refuse_pending(self, volume: str) -> None:
        """Raise PendingOperation if an interrupted operation on `volume` awaits recover."""
        op = self.pending_on(volume)
        if op:
            raise PendingOperation(
                f"volume {quoted(volume)} has an interrupted {op.kind} operation {op.id}; "
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


_held: set[str] = set()


def hold_for_tests(step: str) -> None:
    """Crash tests: wait at a named point (each journaled step, `staging-data`,
    `streaming-data`, `export-checked`, or `locking`...), so a test can look, or
    SIGKILL us there.

    With VOLTOOL_TEST_HOLD_AT=<step>[,<step>...] and VOLTOOL_TEST_HOLD_FILE=<path>,
    the process writes its pid to the file and waits until the file is removed,
    the first time it reaches each of those steps. Never set in normal use.
    """
    wanted = os.environ.get("VOLTOOL_TEST_HOLD_AT", "").split(",")
    if step not in wanted or step in _held:
        return
    _held.add(step)
    hold = Path(os.environ.get("VOLTOOL_TEST_HOLD_FILE", ""))
    if not hold.name:
        return
    import time

    # Whole or not at all: a test that sees the file may read our pid at once.
    part = hold.with_name(hold.name + ".part")
    part.write_text(str(os.getpid()))
    os.replace(part, hold)
    while hold.exists():
        time.sleep(0.02)


def held_after(advance: Callable[[int], None], point: str) -> Callable[[int], None]:
    """`advance`, and a hold point `point` once 16 MiB went by (crash tests stop us mid-stream
    there, deterministically, however fast the machine)."""
    sent = 0

    def step(n: int) -> None:
        nonlocal sent
        advance(n)
        sent += n
        if sent >= 16 << 20:
            hold_for_tests(point)

    return step
