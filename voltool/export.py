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
from dataclasses import dataclass
from typing import BinaryIO, Protocol, cast

from voltool import archive, catalog, compression, userfile
from voltool.catalog import Snapshot
from voltool.compression import Compression
from voltool.engine import Mount
from voltool.errors import IntegrityError
from voltool.ids import new_id
from voltool.journal import hold_for_tests
from voltool.layout import DATA_DIR, Meta
from voltool.locks import volume_lock
from voltool.runtime import Runtime
from voltool.transfer import Transfer
from voltool.validate import EntryValidator, Limits


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
    from voltool.restore import read_manifest

    op = new_id()
    counted = _Counting(out)
    with volume_lock(rt, snapshot.volume, op, "export", wait):
        catalog.require(rt, snapshot)
        manifest = read_manifest(rt, snapshot, info)
        mount = Mount(snapshot.volume, "/snap", read_only=True)
        with (
            rt.engine.helper(rt.image, [mount], rt.helper_labels(op)) as src,
            contextlib.closing(rt.engine.get_archive(src, f"/snap/{DATA_DIR}")) as stream,
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
