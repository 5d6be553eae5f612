"""Exporting a snapshot: one self-describing, compressed file (archive.py's format).

The snapshot's data is read through the archive API and held to its manifest
as it goes (a damaged snapshot fails the export instead of travelling), then
compressed into the output. Memory stays bounded whatever the snapshot's size:
nothing but the manifest is held. The snapshot's lock is held throughout, so
it cannot be deleted or pruned half-way. A file is written under a temporary
name beside its destination and renamed into place only once it is whole.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from voltool import archive, catalog, compression
from voltool.catalog import Snapshot
from voltool.compression import Compression
from voltool.engine import Mount
from voltool.errors import IntegrityError, UsageError
from voltool.ids import new_id
from voltool.layout import DATA_DIR, Meta
from voltool.locks import volume_lock
from voltool.runtime import Runtime
from voltool.transfer import Transfer
from voltool.validate import EntryValidator, Limits


@dataclass(frozen=True)
class ExportResult:
    snapshot: Snapshot
    compression: Compression
    written: int  # bytes of the file (compressed)
    path: str | None  # None: written to a stream


def export(
    rt: Runtime, snapshot: Snapshot, out: BinaryIO, kind: Compression, wait: float | None = 30
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
            rt.reporter.begin(f"exporting {snapshot.id}", info.bytes)
            try:
                for chunk in transfer:
                    w.write(chunk)
            finally:
                rt.reporter.end()
    out.flush()
    return ExportResult(snapshot, kind, counted.written, None)


def export_file(
    rt: Runtime, snapshot: Snapshot, path: Path, kind: Compression, wait: float | None = 30
) -> ExportResult:
    """Export into the file `path`, which appears (or is replaced) only once it is whole."""
    if path.is_dir():
        raise UsageError(f"{path} is a directory")
    if not path.parent.is_dir():
        raise UsageError(f"directory {path.parent} does not exist")
    part = path.with_name(f".{path.name}.{new_id()}.part")
    try:
        with open(part, "xb") as f:
            result = export(rt, snapshot, f, kind, wait)
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return ExportResult(snapshot, kind, result.written, str(path))


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Counting:
    """A write-only file that counts what goes through to `out`."""

    def __init__(self, out: BinaryIO) -> None:
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
