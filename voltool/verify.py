"""Verifying snapshots: re-read the data through the engine and hold it to its manifest.

Every entry of data/ is read back and compared with manifest.jsonl (type,
mode, owner, size, content hash, link target, hard-link group; mtime too,
as the restore's check does), and the tree digest recomputed. Unlike a
restore, which stops at the first difference, verify reports them all:
entries missing, extra and altered.
"""

from __future__ import annotations

from dataclasses import dataclass

from voltool import catalog, live
from voltool.catalog import Snapshot
from voltool.errors import IntegrityError
from voltool.ids import new_id
from voltool.layout import DATA_DIR
from voltool.locks import volume_lock
from voltool.manifest import merge
from voltool.runtime import Runtime


@dataclass(frozen=True)
class Report:
    snapshot: Snapshot
    missing: tuple[str, ...] = ()
    extra: tuple[str, ...] = ()
    altered: tuple[tuple[str, tuple[str, ...]], ...] = ()  # path, fields that differ
    problem: str | None = None  # what stopped the check before it could compare
    checked: int = 0  # entries compared

    @property
    def ok(self) -> bool:
        return self.problem is None and not (self.missing or self.extra or self.altered)


def verify(rt: Runtime, snapshot: Snapshot, wait: float | None = 30) -> Report:
    """Check one snapshot under its lock; never raises for what it finds wrong."""
    from voltool.restore import read_manifest

    info = snapshot.info
    if info is None or snapshot.problem:
        return Report(snapshot, problem=snapshot.problem or f"it is {snapshot.state}")
    with volume_lock(rt, snapshot.volume, new_id(), "verify", wait):
        catalog.require(rt, snapshot)
        try:
            want = read_manifest(rt, snapshot, info)
            got = live.manifest_of(rt, snapshot.volume, sub=DATA_DIR)
        except IntegrityError as e:
            return Report(snapshot, problem=str(e))
    missing, extra, altered = [], [], []
    for w, g in merge(want, got):
        if g is None:
            assert w is not None
            missing.append(w.path)
        elif w is None:
            extra.append(g.path)
        elif g != w:
            a, b = w.as_dict(), g.as_dict()
            fields = tuple(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
            altered.append((w.path, fields))
    report = Report(snapshot, tuple(missing), tuple(extra), tuple(altered), checked=len(want))
    if report.ok and got.digest() != info.tree_digest:  # cannot differ if all matched
        return Report(snapshot, problem="tree digest differs", checked=len(want))
    return report
