"""Move a tree from one tar stream to another: check, hash, rename, re-emit.

`Transfer` reads a source stream (an engine archive or a file), passes each
entry through an `EntryValidator`, computes its manifest entry and content
hash on the fly, optionally checks it against an expected manifest, and
yields an output tar in which every header is voltool's own canonical PAX
header, renamed from the source's top directory to the destination's.
The source may be a byte stream or a TarReader whose first members the
caller has already read (an export's metadata); with `close=False` the
output has no end-of-archive, so that the caller can append members.
Content flows through in the chunks it arrived in: memory stays bounded
whatever the size of the files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from voltool.errors import IntegrityError
from voltool.store.manifest import Manifest, ManifestBuilder, ManifestEntry, merge
from voltool.tar.stream import END_OF_ARCHIVE, EntryType, TarEntry, TarReader, header_bytes, padding
from voltool.tar.validate import EntryValidator
from voltool.words import quoted

_FLUSH = 512 * 1024  # coalesce headers and content into chunks of about this size

_MANIFEST_TYPE = {
    EntryType.FILE: "file",
    EntryType.DIR: "dir",
    EntryType.SYMLINK: "symlink",
    EntryType.CHAR: "char",
    EntryType.BLOCK: "block",
    EntryType.FIFO: "fifo",
}


@dataclass(frozen=True)
class RootOverride:
    """Header values for the destination's top directory (a private staging directory)."""

    mode: int
    uid: int = 0
    gid: int = 0


class Transfer:
    """An iterable of output tar chunks; `manifest` is available once it is exhausted."""

    def __init__(
        self,
        source: Iterable[bytes] | TarReader,
        validator: EntryValidator,
        dest_top: str,
        *,
        expect: Manifest | None = None,
        root_override: RootOverride | None = None,
        on_bytes: Callable[[int], None] | None = None,
        skip: Callable[[str], bool] | None = None,
        default_root: TarEntry | None = None,
        fill_parents: int | None = None,
        close: bool = True,
    ) -> None:
        self._reader = source if isinstance(source, TarReader) else TarReader(source)
        self._default_root = default_root
        self._fill_parents = fill_parents
        self._close = close
        self._validator = validator
        self._dest_top = dest_top
        self._expect = expect
        self._root_override = root_override
        self._on_bytes = on_bytes or (lambda n: None)
        self._skip = skip or (lambda rel: False)
        self._builder = ManifestBuilder()
        self._manifest: Manifest | None = None

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            raise RuntimeError("the transfer has not finished")
        return self._manifest

    def _dest(self, rel: str) -> str:
        return self._dest_top if rel == "." else f"{self._dest_top}/{rel}"

    def __iter__(self) -> Iterator[bytes]:
        out: list[bytes] = []
        size = 0
        for raw_entry in self._entries():
            entry = _engine_bounds(raw_entry)
            rel = self._validator.check(entry)
            if rel != "." and self._skip(rel):
                continue  # neither forwarded nor recorded; its content is skipped unread
            if entry.type is EntryType.HARDLINK:
                target = self._validator.link_target(entry)
                head = self._builder.get(target)
                if head is None:
                    raise IntegrityError(f"{quoted(rel)} is a hard link to a skipped entry")
                # dockerd applies a link header's owner, mode and mtime to the shared
                # inode: send the target's, so the disk is what the manifest records.
                got = self._builder.add_hardlink(rel, target, head.mtime)
                header = TarEntry(
                    self._dest(rel),
                    EntryType.HARDLINK,
                    head.mode,
                    head.uid,
                    head.gid,
                    0,
                    head.mtime,
                    linkname=self._dest(target),
                )
                self._check_expected(rel, entry, got, self._want(rel))
                out.append(header_bytes(header))
                size += len(out[-1])
                if size >= _FLUSH:
                    yield b"".join(out)
                    out, size = [], 0
                continue
            want = self._want(rel)
            self._check_header(rel, entry, want)  # before one byte of its content goes out
            header = entry.renamed(self._dest(rel))
            if rel == "." and self._root_override is not None:
                o = self._root_override
                header = TarEntry(header.name, EntryType.DIR, o.mode, o.uid, o.gid, 0, entry.mtime)
            out.append(header_bytes(header))
            size += len(out[-1])
            digest = None
            if entry.type is EntryType.FILE:
                h = hashlib.sha256()
                for piece in self._reader.content():
                    h.update(piece)
                    if size + len(piece) > _FLUSH:
                        if out:
                            yield b"".join(out)
                            out, size = [], 0
                        yield piece
                    else:
                        out.append(piece)
                        size += len(piece)
                    self._on_bytes(len(piece))
                out.append(padding(entry.size))
                size += len(out[-1])
                digest = h.hexdigest()
            got = _manifest_entry(rel, entry, digest)
            self._builder.add(got)
            self._check_expected(rel, entry, got, want)
            if size >= _FLUSH:
                yield b"".join(out)
                out, size = [], 0
        self._manifest = self._builder.build()
        if self._expect is not None:
            _check_complete(self._manifest, self._expect)
        if self._close:
            out.append(END_OF_ARCHIVE)
        yield b"".join(out)

    def _entries(self) -> Iterator[TarEntry]:
        """The source's entries, after `default_root` if the source does not start with a root.

        With `fill_parents` (an mtime), a directory the source implies but never
        lists comes first as an entry of its own (0755, root), so that the
        manifest lists every directory the engine will create.
        """
        first = self._reader.peek()
        if self._default_root is not None and (
            first is None or self._validator.relative(first.name, first.name) != "."
        ):
            yield self._default_root
        for entry in self._reader:
            if self._fill_parents is not None:
                yield from self._missing_parents(entry, self._fill_parents)
            yield entry

    def _missing_parents(self, entry: TarEntry, mtime: int) -> Iterator[TarEntry]:
        rel = self._validator.relative(entry.name, entry.name)
        missing = []
        parent = rel.rpartition("/")[0] if rel != "." else ""
        while parent and not self._validator.seen(parent):
            missing.append(parent)
            parent = parent.rpartition("/")[0]
        for p in reversed(missing):
            yield TarEntry(self._validator.name_of(p), EntryType.DIR, 0o755, 0, 0, 0, mtime)

    def _want(self, rel: str) -> ManifestEntry | None:
        return None if self._expect is None else self._expect.get(rel)

    def _check_header(self, rel: str, entry: TarEntry, want: ManifestEntry | None) -> None:
        """Compare an entry's header with the manifest's claim, before its content is read."""
        if self._expect is None:
            return
        if want is None:
            raise IntegrityError(
                f"snapshot data has {quoted(rel)}, which its manifest does not list"
            )
        got = _manifest_entry(rel, entry, None)
        for field in ("type", "size", "target", "dev", "mode", "uid", "gid", "mtime"):
            if getattr(got, field) != getattr(want, field):
                raise IntegrityError(f"{quoted(rel)} does not match its manifest ({field} differs)")

    def _check_expected(
        self, rel: str, entry: TarEntry, got: ManifestEntry, want: ManifestEntry | None
    ) -> None:
        """Compare one arrived entry with the manifest's claim, before the next is read."""
        if self._expect is None:
            return
        if want is None:
            raise IntegrityError(
                f"snapshot data has {quoted(rel)}, which its manifest does not list"
            )
        if entry.type is EntryType.HARDLINK and want.link is None:
            raise IntegrityError(
                f"{quoted(rel)} arrived as a hard link; the manifest lists a lone file"
            )
        for field in ("type", "size", "sha256", "target", "dev", "mode", "uid", "gid", "mtime"):
            if getattr(got, field) != getattr(want, field):
                what = "content" if field == "sha256" else field
                raise IntegrityError(f"{quoted(rel)} does not match its manifest ({what} differs)")


# dockerd stores any time before 1970 or after 2262 as 1970-01-01 (moby
# pkg/archive boundTime). Record what the engine will store, not what it was
# sent, or a snapshot would not match its own manifest.
_LATEST = (2**63 - 1) // 10**9


def _engine_bounds(entry: TarEntry) -> TarEntry:
    if 0 <= entry.mtime <= _LATEST:
        return entry
    return replace(entry, mtime=0)


def _manifest_entry(rel: str, entry: TarEntry, digest: str | None) -> ManifestEntry:
    special = entry.type in (EntryType.CHAR, EntryType.BLOCK)
    return ManifestEntry(
        path=rel,
        type=_MANIFEST_TYPE[entry.type],
        mode=entry.mode,
        uid=entry.uid,
        gid=entry.gid,
        size=entry.size if entry.type is EntryType.FILE else 0,
        mtime=entry.mtime,
        sha256=digest,
        target=entry.linkname if entry.type is EntryType.SYMLINK else None,
        dev=f"{entry.devmajor},{entry.devminor}" if special else None,
    )


def _check_complete(got: Manifest, want: Manifest) -> None:
    """Every entry `want` lists arrived, in the same hard-link group.

    Each arrived entry was held to `want` as it came (`_check_expected`), but
    for its group: a group is known only once the stream has ended.
    """
    missing, first, regrouped = 0, "", ""
    for w, g in merge(want, got):
        if w is None:
            continue  # cannot be: an entry `want` does not list is refused as it arrives
        if g is None:
            missing += 1
            first = first or w.path
        elif g != w:
            regrouped = regrouped or w.path
    if missing:
        raise IntegrityError(
            f"snapshot data lacks {missing} entr{'y' if missing == 1 else 'ies'} "
            f"its manifest lists, first {quoted(first)}"
        )
    if regrouped:
        raise IntegrityError(
            f"{quoted(regrouped)} does not match its manifest (hard-link group differs)"
        )
