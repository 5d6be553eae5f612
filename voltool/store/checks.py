"""Holding a snapshot to its manifest: the differences found, and the check of a stored
snapshot by the agent, next to its data.

voltool.ops.verify reads snapshots back with these; migrate checks its copies with them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from voltool.engine import agent_image, agentrun
from voltool.engine.client import Mount
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import format2
from voltool.store.catalog import Snapshot
from voltool.store.layout import DATA_DIR, MANIFEST
from voltool.store.manifest import Manifest, merge

# Differences listed per kind; beyond that they are only counted, so that a
# snapshot volume rewritten wholesale cannot make verify hold millions of paths.
LISTED = 1000


@dataclass(frozen=True)
class Differences:
    missing: tuple[str, ...] = ()  # the first LISTED of each kind, in path order
    extra: tuple[str, ...] = ()
    altered: tuple[tuple[str, tuple[str, ...]], ...] = ()  # path, fields that differ
    counts: tuple[int, int, int] = (0, 0, 0)  # all missing, extra and altered entries


@dataclass(frozen=True)
class Report:
    snapshot: Snapshot
    found: Differences = Differences()
    problem: str | None = None  # what stopped the check before it could compare
    checked: int = 0  # entries compared

    @property
    def ok(self) -> bool:
        return self.problem is None and not any(self.found.counts)


def compare(want: Manifest, got: Manifest, listed: int = LISTED) -> Differences:
    """What differs between a manifest and the data read back.

    Memory is bounded: past `listed` differences of a kind, they are only counted.
    """
    missing: list[str] = []
    extra: list[str] = []
    altered: list[tuple[str, tuple[str, ...]]] = []
    counts = [0, 0, 0]
    for w, g in merge(want, got):
        if g is None:
            assert w is not None
            counts[0] += 1
            if len(missing) < listed:
                missing.append(w.path)
        elif w is None:
            counts[1] += 1
            if len(extra) < listed:
                extra.append(g.path)
        elif g != w:
            counts[2] += 1
            if len(altered) < listed:
                a, b = w.as_dict(), g.as_dict()
                fields = tuple(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k))
                altered.append((w.path, fields))
    return Differences(
        tuple(missing), tuple(extra), tuple(altered), (counts[0], counts[1], counts[2])
    )


def check_stored(rt: Runtime, snapshot: Snapshot, op: str) -> Report:
    """`_in_store`'s check, under the caller's lock of the store (after catalog.require)."""
    info = snapshot.info
    assert info is not None
    image = agent_image.agent_image(rt)
    tree = f"{format2.MOUNT}/{snapshot.path(DATA_DIR)}"
    manifest = f"{format2.MOUNT}/{snapshot.path(MANIFEST)}"
    mounts = [Mount(snapshot.volume, format2.MOUNT, read_only=True)]
    rt.reporter.status(f"verifying {snapshot.id}")
    try:
        result = agentrun.run(
            rt,
            image,
            op,
            mounts,
            [tree, manifest, str(3 * LISTED)],
            script=program("agent-verify"),
        )
    finally:
        rt.reporter.status(None)
    summary = result.summary
    if result.fatal or summary is None:
        return Report(snapshot, problem=result.fatal or f"the agent exited with {result.code}")
    if result.errors:
        return Report(snapshot, problem=result.errors[0], checked=summary.entries)
    found = _differences(result.stdout, summary.mismatches)
    report = Report(snapshot, found, checked=summary.entries)
    if report.ok and (summary.digest != info.tree_digest or summary.entries != info.entries):
        return Report(snapshot, problem="tree digest differs", checked=summary.entries)
    return report


def _differences(lines: bytes, total: int) -> Differences:
    """The agent's difference lines (the first few of them), as a report lists them."""
    missing: list[str] = []
    extra: list[str] = []
    altered: dict[str, list[str]] = {}
    for raw in lines.splitlines():
        try:
            line = json.loads(raw)
            kind, path = line["mismatch"], str(line["path"])
        except (ValueError, KeyError, TypeError):
            continue
        if kind == "missing" and len(missing) < LISTED:
            missing.append(path)
        elif kind == "extra" and len(extra) < LISTED:
            extra.append(path)
        elif kind == "changed" and (path in altered or len(altered) < LISTED):
            altered.setdefault(path, []).append(str(line.get("field")))
    listed = len(missing) + len(extra) + sum(len(v) for v in altered.values())
    # What was not listed is counted with the changes: the agent says only how many.
    counts = (len(missing), len(extra), len(altered) + max(total - listed, 0))
    return Differences(
        tuple(missing), tuple(extra), tuple((p, tuple(f)) for p, f in altered.items()), counts
    )
