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

from voltool.engine.locks import volume_lock
from voltool.errors import IntegrityError, NotFound, UsageError
from voltool.ids import new_id
from voltool.runtime import Runtime
from voltool.store import catalog, staging
from voltool.store.catalog import Snapshot
from voltool.store.layout import DATA_DIR
from voltool.store.manifest import ManifestEntry
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
    from voltool.store.catalog import read_manifest

    _usable(snapshot)
    assert snapshot.info is not None
    want = normal_path(path)
    if snapshot.in_store:
        return _stored_tree(rt, snapshot, want, recursive, wait)
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


def _stored_tree(
    rt: Runtime, snapshot: Snapshot, want: str, recursive: bool, wait: float
) -> Iterator[ManifestEntry]:
    """`tree` of a stored snapshot: its manifest streamed once, under its lock, from the
    store. The manifest lists a directory right before what it holds."""
    prefix = "" if want == "." else want + "/"
    found = False
    with volume_lock(rt, snapshot.volume, new_id(), "ls", wait):
        catalog.require(rt, snapshot)
        for e in staging.entries(rt, snapshot):
            if e.path == want:
                found = True
                if e.type != "dir":
                    yield e
                    return
            elif found and e.path.startswith(prefix):
                if recursive or "/" not in e.path[len(prefix) :]:
                    yield e
            elif found:
                return  # past the directory's subtree
    if not found:
        raise NotFound(f"no {quoted(want)} in snapshot {snapshot.id}")


def _stored_entry(rt: Runtime, snapshot: Snapshot, want: str) -> ManifestEntry | None:
    return next((e for e in staging.entries(rt, snapshot) if e.path == want), None)


def cat(rt: Runtime, snapshot: Snapshot, path: str, out: Sink, wait: float = 30) -> int:
    """Write one regular file's bytes to `out`; returns how many.

    NotFound if `path` is not in the snapshot, UsageError if it is not a
    regular file, IntegrityError if the bytes differ from the manifest's size
    or SHA-256 (found as they stream: what was written before is not taken back).
    """
    from voltool.store.catalog import read_manifest

    _usable(snapshot)
    assert snapshot.info is not None
    want = normal_path(path)
    with volume_lock(rt, snapshot.volume, new_id(), "cat", wait):
        catalog.require(rt, snapshot)
        if snapshot.in_store:
            entry = _stored_entry(rt, snapshot, want)
        else:
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
        data = snapshot.path(f"{DATA_DIR}/{entry.path}")
        yield from catalog.read_file(rt, snapshot.volume, data, entry.size)
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
