"""Quiesce the containers that use a volume, and bring them back in every outcome.

Modes: "pause" (crash-consistent: the processes are frozen, not told),
"stop" (application-consistent: stopped, then started again) and "none".
Only containers that are running when we look are touched; one a user paused
or stopped stays as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from voltool.engine import ContainerInfo, Engine
from voltool.errors import NotFound, UsageError, VoltoolError

MODES = ("pause", "stop", "none")


@dataclass(frozen=True)
class Quiesced:
    """A container voltool paused or stopped, and so must resume."""

    id: str
    name: str
    action: str  # "pause" | "stop"

    def as_record(self) -> dict[str, str]:
        return {"id": self.id, "name": self.name, "action": self.action}

    @classmethod
    def from_record(cls, rec: dict[str, str]) -> Quiesced:
        return cls(rec["id"], rec["name"], rec["action"])


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
        raise UsageError(f"unknown quiesce mode {mode!r}")
    if mode == "none":
        return []
    return [Quiesced(c.id, c.name, mode) for c in containers]


def apply(engine: Engine, targets: list[Quiesced], stop_timeout: int) -> None:
    """Pause or stop every target, in order; raises at the first that fails.

    The caller resumes all targets in every outcome (`resume` skips those not reached).
    """
    for q in targets:
        if q.action == "pause":
            engine.pause(q.id)
        else:
            engine.stop(q.id, stop_timeout)


def resume(engine: Engine, targets: Iterable[Quiesced]) -> list[str]:
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
            if q.action == "pause" and status == "paused":
                engine.unpause(q.id)
            elif q.action == "stop" and status in ("exited", "created"):
                engine.start(q.id)
        except VoltoolError as e:
            failures.append(f"{q.name}: {e}")
    return failures
