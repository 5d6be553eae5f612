"""Looking inside a snapshot: its tree from the manifest (`ls`), one file's bytes (`cat`).

The tree comes from the manifest alone; a file's bytes come through the
engine's archive API, as export reads them, in bounded memory, and are held to
the manifest's size and SHA-256 as they stream. The snapshot's lock is held
while its volume is mounted, so it cannot be deleted (and its volume silently
re-created empty by the mount) meanwhile.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterator
from typing import Protocol

from voltool import catalog
from voltool.catalog import Snapshot
from voltool.errors import IntegrityError, NotFound, UsageError
from voltool.ids import new_id
from voltool.layout import DATA_DIR
from voltool.locks import volume_lock
from voltool.manifest import ManifestEntry
from voltool.runtime import Runtime
from voltool.words import quoted


class Sink(Protocol):
    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


def normal_path(path: str) -> str:
    """A path as the manifest spells it: `.` for the root, else `a/b` (no leading `/` or `./`)."""
    if "\0" in path:
        raise UsageError("a path cannot contain a NUL byte")
    norm = posixpath.normpath("/" + path).lstrip("/")
    return norm or "."


def _usable(snapshot: Snapshot) -> None:
    if snapshot.info is None or snapshot.problem:
        why = snapshot.problem or f"it is {snapshot.state}"
        raise IntegrityError(f"snapshot {snapshot.id} cannot be read: {why}")


def tree(
    rt: Runtime, snapshot: Snapshot, path: str = ".", recursive: bool = False, wait: float = 30
) -> Iterator[ManifestEntry]:
    """The entries under `path`, in manifest order: a directory's entries (all below it if
    `recursive`), or the entry itself if it is not a directory. NotFound if it is not there."""
    from voltool.restore import read_manifest

    _usable(snapshot)
    assert snapshot.info is not None
    want = normal_path(path)
    with volume_lock(rt, snapshot.volume, new_id(), "ls", wait):
        catalog.require(rt, snapshot)
        manifest = read_manifest(rt, snapshot, snapshot.info)
    entry = manifest.get(want)
    if entry is None:
        raise NotFound(f"no {quoted(want)} in snapshot {snapshot.id}")
    if entry.type != "dir":
        return iter([entry])
    prefix = "" if want == "." else want + "/"
    # A generator over the manifest's own (spilled) table: a tree of millions of
    # entries is listed without holding it in memory.
    return (
        e
        for e in manifest
        if e.path != "."
        and e.path.startswith(prefix)
        and (recursive or "/" not in e.path[len(prefix) :])
    )


def cat(rt: Runtime, snapshot: Snapshot, path: str, out: Sink, wait: float = 30) -> int:
    """Write one regular file's bytes to `out`; returns how many.

    NotFound if `path` is not in the snapshot, UsageError if it is not a
    regular file, IntegrityError if the bytes differ from the manifest's size
    or SHA-256 (found as they stream: what was written before is not taken back).
    """
    from voltool.restore import read_manifest

    _usable(snapshot)
    assert snapshot.info is not None
    want = normal_path(path)
    with volume_lock(rt, snapshot.volume, new_id(), "cat", wait):
        catalog.require(rt, snapshot)
        entry = read_manifest(rt, snapshot, snapshot.info).get(want)
        if entry is None:
            raise NotFound(f"no {quoted(want)} in snapshot {snapshot.id}")
        if entry.type != "file":
            what = "a directory" if entry.type == "dir" else f"a {entry.type}"
            raise UsageError(
                f"{quoted(want)} in snapshot {snapshot.id} is {what}, not a regular file"
            )
        return _copy(_content(rt, snapshot, entry), entry, out)


def _content(rt: Runtime, snapshot: Snapshot, entry: ManifestEntry) -> Iterator[bytes]:
    try:
        yield from catalog.read_file(rt, snapshot.volume, f"{DATA_DIR}/{entry.path}", entry.size)
    except NotFound:
        raise IntegrityError(
            f"snapshot {snapshot.id} lists {quoted(entry.path)} but its data does not hold it"
        ) from None


def _copy(chunks: Iterator[bytes], entry: ManifestEntry, out: Sink) -> int:
    """Copy `chunks` to `out`, holding them to `entry`'s size and SHA-256."""
    digest = hashlib.sha256()
    n = 0
    for chunk in chunks:
        n += len(chunk)
        if n > entry.size:
            break
        digest.update(chunk)
        out.write(chunk)
    if n != entry.size or digest.hexdigest() != entry.sha256:
        raise IntegrityError(
            f"{quoted(entry.path)} does not match the snapshot's manifest "
            f"({'size' if n != entry.size else 'SHA-256'} differs): the snapshot is damaged"
        )
    out.flush()
    return n
