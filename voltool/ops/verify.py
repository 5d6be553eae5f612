"""Verifying snapshots: re-read the data through the engine and hold it to its manifest.

Every entry of data/ is read back and compared with manifest.jsonl (type,
mode, owner, size, content hash, link target, hard-link group; mtime too,
as the restore's check does), and the tree digest recomputed. Unlike a
restore, which stops at the first difference, verify reports them all:
entries missing, extra and altered.
"""

from __future__ import annotations

from voltool.engine.locks import volume_lock
from voltool.errors import IntegrityError
from voltool.ids import new_id
from voltool.runtime import Runtime
from voltool.store import catalog
from voltool.store.catalog import Snapshot
from voltool.store.checks import Report, check_stored, compare
from voltool.store.layout import DATA_DIR
from voltool.tar import live


def verify(rt: Runtime, snapshot: Snapshot, wait: float | None = 30) -> Report:
    """Check one snapshot under its lock; never raises for what it finds wrong."""
    from voltool.store.catalog import read_manifest

    info = snapshot.info
    if info is None or snapshot.problem:
        return Report(snapshot, problem=snapshot.problem or f"it is {snapshot.state}")
    if snapshot.in_store:
        return _in_store(rt, snapshot, wait)
    with volume_lock(rt, snapshot.volume, new_id(), "verify", wait):
        catalog.require(rt, snapshot)
        try:
            want = read_manifest(rt, snapshot, info)
            got = live.manifest_of(
                rt,
                snapshot.volume,
                sub=DATA_DIR,
                label=f"verifying {snapshot.id}",
                total=info.bytes,
            )
        except IntegrityError as e:
            return Report(snapshot, problem=str(e))
    report = Report(snapshot, compare(want, got), checked=len(want))
    if report.ok and got.digest() != info.tree_digest:  # cannot differ if all matched
        return Report(snapshot, problem="tree digest differs", checked=len(want))
    return report


def _in_store(rt: Runtime, snapshot: Snapshot, wait: float | None) -> Report:
    """Format 2: the agent hashes the stored tree again next to it, and compares it with
    the stored manifest, which must be the one snapshot.json describes."""
    op = new_id()
    with volume_lock(rt, snapshot.volume, op, "verify", wait):
        catalog.require(rt, snapshot)
        return check_stored(rt, snapshot, op)
