"""Keepers: what protects snapshot volumes and stores from `docker volume prune`.

To the engine a snapshot volume is an unused volume, and `docker volume prune`
removes every unused volume (on engine 23+, with `--all`). So each snapshot
volume has a keeper: a created, never started container of voltool's, named
`voltool-keep-<id>`, that mounts it read-only with no network. A volume that a
container mounts, in any state, is never pruned, and cannot be removed. Each
format-2 store (voltool.store.format2) has one too, `voltool-keep-store-<hash>`.

Invariants:
- the keeper is created right after its snapshot volume, before any data;
- a snapshot volume is removed only through `remove_snapshot_volume`, which
  removes its keepers first, and puts one back if the volume stays;
- a keeper is never started, never counts as a user of its volume (it carries
  io.voltool.managed) and is never an orphaned helper (its role is "keeper").
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from dataclasses import dataclass

from voltool.engine import labels as L
from voltool.engine.client import ContainerInfo, Mount, NameConflict
from voltool.errors import Busy, EngineError, NotFound, VoltoolError
from voltool.ids import (
    KEEPER_CONTAINER_PREFIX,
    SNAPSHOT_VOLUME_PREFIX,
    is_valid_id,
    keeper_container_name,
)
from voltool.runtime import Runtime
from voltool.words import quoted

MOUNT = "/snapshot"  # where a keeper mounts its snapshot volume (or store)
STORE_PREFIX = (
    "voltool-store-"  # voltool.store.format2's; kept here so keepers import no store code
)


def _snapshot_id(volume: str) -> str:
    sid = volume.removeprefix(SNAPSHOT_VOLUME_PREFIX)
    if volume == sid or not is_valid_id(sid):
        raise ValueError(f"not a snapshot volume: {quoted(volume)}")
    return sid


def _keeper_name(volume: str) -> str:
    """A snapshot volume's keeper is named after its id; a store's after its name."""
    if volume.startswith(STORE_PREFIX):
        return f"{KEEPER_CONTAINER_PREFIX}store-{hashlib.sha256(volume.encode()).hexdigest()[:16]}"
    return keeper_container_name(_snapshot_id(volume))


def protect_store(rt: Runtime, store: str, op: str) -> str:
    """Make sure store volume `store` (which must exist) has its keeper; see `protect`."""
    return protect(rt, store, op)


def protect(rt: Runtime, volume: str, op: str) -> str:
    """Make sure snapshot volume `volume` (which must exist) has its keeper; returns its id.

    Idempotent: a keeper of that volume already there (made by a concurrent
    `recover`, say) is that keeper. Mounting a volume that does not exist would
    make the engine create an empty one: callers create the volume first, or
    hold its lock and check it is still there.
    """
    name = _keeper_name(volume)
    keeper_labels = {**L.managed(L.ROLE_KEEPER, op, rt.owner.token()), L.KEEPER_VOLUME: volume}
    try:
        return rt.engine.create_container(
            rt.image, [Mount(volume, MOUNT, read_only=True)], keeper_labels, name=name
        )
    except NameConflict:
        found = rt.engine.container(name)
        if found.labels.get(L.ROLE) != L.ROLE_KEEPER or found.labels.get(L.KEEPER_VOLUME) != volume:
            raise EngineError(
                f"container {quoted(name)} is in the way of the keeper of "
                f"snapshot volume {quoted(volume)}"
            ) from None
        return found.id


def keepers(rt: Runtime) -> list[ContainerInfo]:
    """Every keeper in the engine."""
    return rt.engine.managed_containers(L.ROLE_KEEPER)


def keepers_of(rt: Runtime, volume: str) -> list[ContainerInfo]:
    return rt.engine.managed_containers(L.ROLE_KEEPER, {L.KEEPER_VOLUME: volume})


def remove_snapshot_volume(rt: Runtime, volume: str) -> None:
    """Remove a snapshot volume and its keepers; one that is gone already is not an error.

    Raises NameConflict if another container still mounts the volume; it then
    stays, protected again.
    """
    found = keepers_of(rt, volume)
    for c in found:
        rt.engine.remove_container(c.id)
    try:
        rt.engine.remove_volume(volume)
    except NameConflict:
        if found:
            with contextlib.suppress(VoltoolError):
                protect(rt, volume, found[0].labels.get(L.OP, "") or "0" * 16)
        raise


def remove_when_unused(rt: Runtime, volume: str, tries: int = 10) -> None:
    """`remove_snapshot_volume`, tried again for a few seconds while another container
    mounts it (a listing or verify by anyone mounts it for a moment); then Busy."""
    for attempt in range(tries):
        try:
            remove_snapshot_volume(rt, volume)
            return
        except NameConflict:
            if attempt == tries - 1:
                raise Busy(f"{quoted(volume)} is in use by a container") from None
            time.sleep(0.5)


@dataclass(frozen=True)
class Coverage:
    """Which snapshot volumes have a keeper, and which keepers have no snapshot volume."""

    protected: frozenset[str]  # snapshot volume names that have a keeper
    orphans: list[ContainerInfo]  # keepers whose snapshot volume is gone


def coverage(snapshot_volumes: set[str], listed: list[ContainerInfo]) -> Coverage:
    """Match keepers (`listed`, listed BEFORE `snapshot_volumes`) with snapshot volumes.

    Keepers first: a keeper is made after its volume and removed before it,
    so a volume listed afterwards exists for every keeper that was listed
    with a name of one, and no live keeper is taken for an orphan.
    """
    protected = set()
    orphans = []
    for c in listed:
        volume = c.labels.get(L.KEEPER_VOLUME, "")
        if volume in snapshot_volumes:
            protected.add(volume)
        else:
            orphans.append(c)
    return Coverage(frozenset(protected), orphans)


def remove_orphan(rt: Runtime, keeper: ContainerInfo) -> None:
    """Remove a keeper unless, looked at again, its volume is a snapshot volume or a store
    after all."""
    volume = keeper.labels.get(L.KEEPER_VOLUME, "")
    with contextlib.suppress(NotFound):
        role = rt.engine.volume(volume).labels.get(L.ROLE) if volume else None
        if role in (L.ROLE_SNAPSHOT, L.ROLE_STORE):
            return
    rt.engine.remove_container(keeper.id)
