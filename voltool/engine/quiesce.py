"""Quiesce the containers that use a volume, and bring them back in every outcome.

Modes (`Mode`): pause (crash-consistent: the processes are frozen, not told),
stop (application-consistent: stopped, then started again) and none.
Only containers that are running when we look are touched; one a user paused
or stopped stays as it was.
"""

from __future__ import annotations

import enum
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from voltool.engine.client import ContainerInfo, Engine
from voltool.errors import NotFound, UsageError, VoltoolError
from voltool.words import quoted


class Mode(enum.StrEnum):
    """How the containers using a volume are quiesced: PAUSE (crash-consistent), STOP
    (application-consistent), NONE (left alone). PAUSE and STOP are also what is done
    to one container (`Quiesced.action`)."""

    PAUSE = "pause"
    STOP = "stop"
    NONE = "none"


MODES = tuple(Mode)
_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")
# A stop timeout read back from a record is data: bounded, so that recovery always ends.
MAX_STOP_TIMEOUT = 3600


@dataclass(frozen=True)
class Quiesced:
    """A container voltool paused or stopped, and so must resume."""

    id: str
    name: str
    action: str  # Mode.PAUSE | Mode.STOP

    def as_record(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "action": self.action}

    @classmethod
    def from_record(cls, rec: object) -> Quiesced | None:
        """The container a journal record names; None if the record does not read well."""
        if not isinstance(rec, dict):
            return None
        cid, name, action = rec.get("id"), rec.get("name"), rec.get("action")
        if not (
            isinstance(cid, str) and isinstance(name, str) and action in (Mode.PAUSE, Mode.STOP)
        ):
            return None
        if not _CONTAINER_ID.fullmatch(cid):
            return None
        return cls(cid, name, str(action))


@dataclass(frozen=True)
class Held:
    """A container an operation paused or stopped, and for how long."""

    name: str
    action: str  # Mode.PAUSE | Mode.STOP
    seconds: float  # from just before the pause or stop to just after the unpause or start


@dataclass
class Clock:
    """When each container was paused or stopped, and resumed (monotonic seconds).

    `apply` and `resume` fill it in; a container never resumed counts up to `now`.
    """

    began: dict[str, float] = field(default_factory=dict)
    ended: dict[str, float] = field(default_factory=dict)

    def held(self, targets: Iterable[Quiesced]) -> list[Held]:
        now = time.monotonic()
        return [
            Held(q.name, q.action, max(self.ended.get(q.id, now) - self.began[q.id], 0.0))
            for q in targets
            if q.id in self.began
        ]


def running_users(engine: Engine, volumes: Iterable[str]) -> list[ContainerInfo]:
    """Running containers that mount any of `volumes`, each once, in a stable order."""
    seen: dict[str, ContainerInfo] = {}
    for v in volumes:
        for c in engine.containers_using(v):
            if c.status == "running":
                seen.setdefault(c.id, c)
    return sorted(seen.values(), key=lambda c: c.name)


def plan(containers: Iterable[ContainerInfo], mode: str) -> list[Quiesced]:
    if mode not in MODES:
        raise UsageError(f"unknown quiesce mode {quoted(mode)}")
    if mode == Mode.NONE:
        return []
    return [Quiesced(c.id, c.name, mode) for c in containers]


def apply(
    engine: Engine,
    targets: list[Quiesced],
    stop_timeout: int,
    before_stop: Callable[[Quiesced], None] | None = None,
    clock: Clock | None = None,
) -> None:
    """Pause or stop every target, in order; raises at the first that fails.

    `before_stop` hears of each stop before it is asked of the engine (the
    journal records it: a stop the engine began goes on if we die, and
    recovery must wait for it to end). The caller resumes all targets in every
    outcome (`resume` skips those not reached).
    """
    for q in targets:
        if q.action == Mode.PAUSE:
            _began(clock, q)
            engine.pause(q.id)
        else:
            if before_stop:
                before_stop(q)
            _began(clock, q)
            engine.stop(q.id, stop_timeout)


def _began(clock: Clock | None, q: Quiesced) -> None:
    if clock is not None:
        clock.began[q.id] = time.monotonic()


class Revival(enum.StrEnum):
    """How to bring back a container that an operation quiesced and did not resume."""

    UNPAUSE = "unpause"
    START = "start"
    # The engine may still be stopping it for a process that has died: wait for
    # that stop to end, then start it (started now, the stop would take it down).
    AWAIT_STOP_THEN_START = "await-stop"


def revival(q: Quiesced, status: str | None, stop_begun: bool) -> Revival | None:
    """What brings `q` back, given its status now (None: gone); None if nothing is to be done.

    A container no longer as we would have left it (running again, paused by
    someone else, restarting, removed) is left alone.
    """
    if status is None:
        return None
    if q.action == Mode.PAUSE:
        if status == "paused":
            return Revival.UNPAUSE
        # Stopped while frozen (the engine or the machine restarted): it was running.
        return Revival.START if status in ("exited", "created") else None
    if status in ("exited", "created"):
        return Revival.START
    if status == "running" and stop_begun:
        return Revival.AWAIT_STOP_THEN_START
    return None


def revive(engine: Engine, q: Quiesced, how: Revival, stop_timeout: int) -> str | None:
    """Bring `q` back as `how` says; None if that was done, else what was done instead."""
    if how is Revival.UNPAUSE:
        engine.unpause(q.id)
        return None
    if how is Revival.AWAIT_STOP_THEN_START:
        # The engine kills the container once the stop timeout is over: a little more.
        status = engine.wait_not_running(q.id, stop_timeout + 10)
        if status == "running":
            return f"left container {q.name} running: its stop never took effect"
    engine.start(q.id)
    return None


def resume(engine: Engine, targets: Iterable[Quiesced], clock: Clock | None = None) -> list[str]:
    """Unpause or start every target that is still as we left it; returns the failures.

    Best effort, each container on its own: one that fails does not keep the
    others down. A container no longer in the state we put it in (gone, or
    already running again) is left alone.
    """
    failures: list[str] = []
    for q in targets:
        try:
            try:
                status = engine.container(q.id).status
            except NotFound:
                continue  # removed since: nothing to resume
            if q.action == Mode.PAUSE and status == "paused":
                engine.unpause(q.id)
            elif q.action == Mode.STOP and status in ("exited", "created"):
                engine.start(q.id)
            else:
                continue
            if clock is not None:
                clock.ended[q.id] = time.monotonic()
        except VoltoolError as e:
            failures.append(f"{q.name}: {e}")
    return failures
