"""One lock per volume, kept in the engine so that it binds every client of that engine.

The lock on volume V is a created, never started container named
`voltool-lock-V`. The engine creates a name at most once, so creating it is an
atomic test-and-set that excludes other voltool processes whatever their user
or host, as long as they use the same engine. Its labels name the holder
(host, boot, pid, start time, uid), the operation and since when.

A holder that is provably gone (same host, and its process or boot is no
more) is stale. A stale lock whose operation is still pending in the journal
is not taken over: the volume may be half-restored, and only `voltool recover`
(which passes `recovering=True`) may take it. Otherwise it is taken over with
a warning. Removal is by container id, so two processes that both find the
same stale lock cannot remove each other's fresh one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass

from voltool.engine import labels as L
from voltool.engine.client import ContainerInfo, NameConflict
from voltool.errors import Busy, NotFound, PendingOperation, VoltoolError
from voltool.ids import lock_container_name
from voltool.owner import Owner
from voltool.runtime import Runtime
from voltool.words import quoted

_POLL = 0.25


@dataclass(frozen=True)
class Holder:
    volume: str
    op: str
    kind: str
    since: str
    owner: Owner | None
    container_id: str

    def describe(self) -> str:
        who = self.owner.describe() if self.owner else "an unknown process"
        return f"{self.kind} operation {self.op} by {who} since {self.since}"

    @property
    def stale(self) -> bool:
        return self.owner is not None and not self.owner.is_alive()


def holder(info: ContainerInfo) -> Holder:
    lab = info.labels
    return Holder(
        volume=lab.get(L.LOCK_VOLUME, "?"),
        op=lab.get(L.OP, "?"),
        kind=lab.get(L.LOCK_KIND, "?"),
        since=lab.get(L.LOCK_SINCE, "?"),
        owner=Owner.parse(lab.get(L.OWNER, "")),
        container_id=info.id,
    )


@contextlib.contextmanager
def volume_lock(
    rt: Runtime,
    volume: str,
    op: str,
    kind: str,
    wait: float | None = None,
    recovering: bool = False,
    take_over: str | None = None,
) -> Iterator[None]:
    """Hold `volume`'s lock for the block; raises Busy (or PendingOperation) if it cannot.

    With `wait`, keeps trying for that many seconds before giving up. `take_over`:
    the id of an operation a person said is dead (`recover --abandoned`): its lock is
    taken over as a stale one would be, though its holder cannot be checked.
    """
    cid = _acquire(rt, volume, op, kind, wait, recovering, take_over)
    try:
        yield
    except BaseException:
        # The engine may be gone: a lock it cannot release must not hide the error
        # that matters. A lock left behind is stale once we are gone; recover clears it.
        with contextlib.suppress(VoltoolError):
            rt.engine.remove_container(cid)
        raise
    rt.engine.remove_container(cid)


def _acquire(
    rt: Runtime,
    volume: str,
    op: str,
    kind: str,
    wait: float | None,
    recovering: bool,
    take_over: str | None = None,
) -> str:
    name = lock_container_name(volume)
    deadline = time.monotonic() + (wait or 0)
    lock_labels = {
        **L.managed(L.ROLE_LOCK, op, rt.owner.token()),
        L.LOCK_VOLUME: volume,
        L.LOCK_KIND: kind,
        L.LOCK_SINCE: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    while True:
        try:
            return rt.engine.create_container(rt.image, [], lock_labels, name=name)
        except NameConflict:
            pass
        try:
            held = holder(rt.engine.container(name))
        except NotFound:
            continue  # released between our create and our look: try again
        if held.stale or (take_over is not None and held.op == take_over):
            _take_over_stale(rt, held, recovering)
            continue
        if time.monotonic() >= deadline:
            raise Busy(f"volume {quoted(volume)} is busy: {held.describe()}")
        time.sleep(_POLL)


def _take_over_stale(rt: Runtime, held: Holder, recovering: bool) -> None:
    """Remove a dead holder's lock, unless its operation is pending (only recover may then).

    The journal's records are in the engine: an operation with none never began,
    and its lock guards nothing.
    """
    pending = rt.journal.operations().get(held.op)
    if not recovering and pending is not None and not pending.finished:
        raise PendingOperation(
            f"volume {quoted(held.volume)} has an interrupted {held.kind} operation {held.op} "
            f"({held.owner.describe() if held.owner else 'unknown holder'}); "
            "run `voltool recover`"
        )
    rt.reporter.warn(f"took over the stale lock on {quoted(held.volume)} left by {held.describe()}")
    rt.engine.remove_container(held.container_id)


def lock_holders(rt: Runtime) -> list[Holder]:
    return [holder(c) for c in rt.engine.managed_containers(L.ROLE_LOCK)]
