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
import os
from dataclasses import dataclass
from typing import BinaryIO, NoReturn, Protocol, cast

from voltool import userfile
from voltool.agent.digest import TreeDigest
from voltool.agent.entry import Entry
from voltool.agent.links import path_key
from voltool.engine.client import Mount
from voltool.engine.locks import volume_lock
from voltool.errors import IntegrityError
from voltool.ids import new_id
from voltool.journal import hold_for_tests
from voltool.runtime import Runtime
from voltool.store import catalog
from voltool.store.catalog import Snapshot
from voltool.store.layout import (
    DATA_DIR,
    FORMAT,
    MANIFEST,
    STORED_MAX_LINE,
    Meta,
    SnapshotInfo,
    check_manifest,
)
from voltool.store.manifest import Manifest, split_lines
from voltool.tar import archive, compression
from voltool.tar.compression import Compression
from voltool.tar.transfer import Transfer
from voltool.tar.validate import EntryValidator, Limits
from voltool.words import quoted


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

    One pass over the archive computes the format-1 manifest, writing nothing; it is
    held, entry by entry, to the stored manifest, which is held to snapshot.json by its
    tree digest; the caller's second pass is held to the first's manifest entry by
    entry, as for a format-1 snapshot. So every byte exported is the snapshot's: a
    store altered before or during the first pass fails the comparison, one altered
    after it fails the second pass, whatever is put back in between.
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
    manifest = transfer.manifest
    _hold_to_stored(rt, snapshot, info, manifest)
    hold_for_tests("export-checked")
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


def _hold_to_stored(rt: Runtime, snapshot: Snapshot, info: SnapshotInfo, read: Manifest) -> None:
    """Hold `read`, the format-1 manifest of what the archive API gave of a stored
    snapshot, to its stored manifest, whose tree digest must be snapshot.json's: the same
    paths (sockets aside: the archive API does not carry them), types, modes, owners,
    sizes, contents, link targets, device numbers and hard-link groups. Streamed: the
    stored manifest is never held whole. IntegrityError on any difference."""

    def refuse(why: str) -> NoReturn:
        raise IntegrityError(
            f"snapshot {snapshot.id} does not match its manifest ({why}): not exported"
        )

    digest = TreeDigest()
    # A group's stored first path -> its format-1 link, and the other way (by path_key:
    # 16 bytes a group, whatever its paths).
    groups: dict[bytes, bytes] = {}
    taken: dict[bytes, bytes] = {}
    seen = 0
    limit = (info.entries + 1) * STORED_MAX_LINE
    raw = catalog.read_file(rt, snapshot.volume, snapshot.path(MANIFEST), limit)
    lines = split_lines(compression.plain_or_gzip(raw, limit), STORED_MAX_LINE)
    for line in lines:
        try:
            stored = Entry.parse(line)
        except ValueError as e:
            refuse(f"its manifest has a malformed line: {e}")
        digest.add(stored)
        if stored.type == "socket":
            continue
        path = stored.path.decode("utf-8", "surrogateescape")
        got = read.get(path)
        if got is None:
            refuse(f"{quoted(path)} is missing from its data")
        seen += 1
        want_dev = f"{stored.rdev[0]},{stored.rdev[1]}" if stored.rdev else None
        target = stored.target.decode("utf-8", "surrogateescape") if stored.target else None
        if (got.type, got.mode, got.uid, got.gid, got.target, got.dev) != (
            stored.type,
            stored.mode,
            stored.uid,
            stored.gid,
            target,
            want_dev,
        ):
            refuse(f"{quoted(path)} differs")
        if stored.type == "file" and (got.size, got.sha256) != (stored.size, stored.sha256):
            refuse(f"{quoted(path)}: content differs")
        if got.link is not None or stored.link is not None:
            # Each side names a group its own way (its first path by another order):
            # what must hold is that the two namings pair off one to one. A stored
            # group's first member comes before its others: met unpaired, it was not
            # one group in what was read.
            first = path_key(stored.link or stored.path)
            theirs = path_key(os.fsencode(got.link or got.path))
            if stored.link is not None and first not in groups:
                refuse(f"{quoted(path)}: another hard-link group")
            if (
                groups.setdefault(first, theirs) != theirs
                or taken.setdefault(theirs, first) != first
            ):
                refuse(f"{quoted(path)}: another hard-link group")
    if digest.hexdigest() != info.tree_digest:
        refuse("its manifest is not the one snapshot.json names")
    if seen != len(read):
        refuse(f"{len(read) - seen} entries of its data are not in it")


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
