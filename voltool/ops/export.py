"""Exporting a snapshot: one self-describing, compressed file (archive.py's format).

The snapshot's data is read through the archive API and held to its manifest
as it goes (a damaged snapshot fails the export instead of travelling), then
compressed into the output. Memory stays bounded whatever the snapshot's size:
nothing but the manifest is held. The snapshot's lock is held throughout, so
it cannot be deleted or pruned half-way. Where the bytes go (a file that
appears only once it is whole, a device or FIFO written in place) is
userfile.py's.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

from voltool import userfile
from voltool.engine.client import Mount
from voltool.engine.locks import volume_lock
from voltool.errors import IntegrityError
from voltool.ids import new_id
from voltool.journal import hold_for_tests
from voltool.runtime import Runtime
from voltool.store import catalog
from voltool.store.catalog import Snapshot
from voltool.store.checks import check_stored
from voltool.store.layout import DATA_DIR, FORMAT, Meta, SnapshotInfo, check_manifest
from voltool.store.manifest import Manifest
from voltool.tar import archive, compression
from voltool.tar.compression import Compression
from voltool.tar.transfer import Transfer
from voltool.tar.validate import EntryValidator, Limits


class Sink(Protocol):
    """Where an export's bytes go: a file, stdout, or userfile.Output."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class ExportResult:
    snapshot: Snapshot
    compression: Compression
    written: int  # bytes of the file (compressed)
    path: str | None  # None: written to a stream


def export(
    rt: Runtime, snapshot: Snapshot, out: Sink, kind: Compression, wait: float | None = 30
) -> ExportResult:
    """Write `snapshot` as an export to `out` (left open); checks every entry on the way."""
    info = snapshot.info
    if info is None or snapshot.problem:
        why = snapshot.problem or f"it is {snapshot.state}"
        raise IntegrityError(f"snapshot {snapshot.id} cannot be exported: {why}")
    from voltool.store.catalog import read_manifest

    op = new_id()
    counted = _Counting(out)
    with volume_lock(rt, snapshot.volume, op, "export", wait):
        catalog.require(rt, snapshot)
        if snapshot.in_store:
            info, manifest = _stored_head(rt, snapshot, info, op)
        else:
            manifest = read_manifest(rt, snapshot, info)
        mount = Mount(snapshot.volume, "/snap", read_only=True)
        data = f"/snap/{snapshot.path(DATA_DIR)}"
        with (
            rt.engine.helper(rt.image, [mount], rt.helper_labels(op)) as src,
            contextlib.closing(rt.engine.get_archive(src, data)) as stream,
            compression.writer(cast(BinaryIO, counted), kind) as w,
        ):
            # Our own snapshot: device nodes and FIFOs are the user's data.
            limits = Limits(info.entries, info.bytes, allow_special=True)
            transfer = Transfer(
                stream,
                EntryValidator(DATA_DIR, limits),
                DATA_DIR,
                expect=manifest,
                on_bytes=rt.reporter.advance,
            )
            for chunk in archive.head_members(info, manifest, snapshot.meta or Meta()):
                w.write(chunk)
            hold_for_tests("export-data")
            rt.reporter.begin(f"exporting {snapshot.id}", info.bytes)
            try:
                for chunk in transfer:
                    w.write(chunk)
            finally:
                rt.reporter.end()
    out.flush()
    return ExportResult(snapshot, kind, counted.written, None)


def _stored_head(
    rt: Runtime, snapshot: Snapshot, info: SnapshotInfo, op: str
) -> tuple[SnapshotInfo, Manifest]:
    """A stored (format-2) snapshot's export head: its snapshot.json as format 1, and the
    format-1 manifest of what the archive API gives of its data. Under the store's lock.

    One pass over the archive computes the format-1 manifest, writing nothing; then
    the stored tree is held to its own manifest and snapshot.json by the agent (a
    store altered is refused, as verify would); the caller's second pass is held to
    the first's manifest entry by entry, as for a format-1 snapshot. The check comes
    between the two passes, so that a store altered before it fails the check, and
    one altered after it fails the second pass: the bytes exported are the ones checked.
    """
    mount = Mount(snapshot.volume, "/snap", read_only=True)
    with (
        rt.engine.helper(rt.image, [mount], rt.helper_labels(op)) as src,
        contextlib.closing(
            rt.engine.get_archive(src, f"/snap/{snapshot.path(DATA_DIR)}")
        ) as stream,
    ):
        # Our own snapshot: device nodes and FIFOs are the user's data.
        limits = Limits(info.entries, info.bytes, allow_special=True)
        transfer = Transfer(
            stream, EntryValidator(DATA_DIR, limits), DATA_DIR, on_bytes=rt.reporter.advance
        )
        rt.reporter.begin(f"reading {snapshot.id}", info.bytes)
        try:
            for _ in transfer:  # the manifest only: nothing is written
                pass
        finally:
            rt.reporter.end()
    report = check_stored(rt, snapshot, op)
    if not report.ok:
        missing, extra, altered = report.found.counts
        why = report.problem or f"{missing} missing, {extra} extra, {altered} altered"
        raise IntegrityError(
            f"snapshot {snapshot.id} does not match its manifest ({why}): not exported"
        )
    hold_for_tests("export-checked")
    manifest = transfer.manifest
    if len(manifest) > info.entries:
        raise IntegrityError(f"snapshot {snapshot.id} has more entries than its manifest lists")
    if len(manifest) < info.entries:
        # The agent keeps sockets; the archive API does not carry them.
        rt.reporter.warn(
            f"snapshot {snapshot.id}: {info.entries - len(manifest)} entries the archive "
            "API does not carry (sockets) are not exported"
        )
    head = dataclasses.replace(
        info,
        format=FORMAT,
        entries=len(manifest),
        bytes=manifest.content_bytes(),
        tree_digest=manifest.digest(),
        started_ns=None,
    )
    check_manifest(manifest, head)
    return head, manifest


def export_file(
    rt: Runtime,
    snapshot: Snapshot,
    dest: userfile.Destination,
    kind: Compression,
    wait: float | None = 30,
) -> ExportResult:
    """Export to `dest`: a file appears (or is replaced) only once it is whole; a device
    or FIFO is written in place."""
    with userfile.written(dest) as out:
        result = export(rt, snapshot, out, kind, wait)
    return ExportResult(snapshot, kind, result.written, dest.name)


class _Counting:
    """A write-only file that counts what goes through to `out`."""

    def __init__(self, out: Sink) -> None:
        self._out = out
        self.written = 0

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self.written += len(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()

    def writable(self) -> bool:
        return True
