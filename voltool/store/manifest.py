"""A tree's manifest: one canonical line per entry, and the tree digest over them.

Invariants:
- Paths are relative to the volume root, "/"-separated, normalised; the root is ".".
- Hard links are order-free: every member of a link group is a `file` with the
  group's content hash, and `link` names the group's smallest path (the
  smallest member included). Which member the tar stream sent first does not
  show.
- The tree digest is SHA-256 over the canonical lines, sorted by path, with
  `mtime` left out: two trees with the same paths, types, modes, owners, link
  targets, link groups and contents have the same digest, whatever the order
  of the stream, and a restore (which cannot keep the volume root's mtime)
  keeps it. mtimes are recorded and restored all the same.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from voltool.errors import IntegrityError
from voltool.store.spill import Duplicate, Table
from voltool.tar.validate import (
    MAX_NAME_BYTES,
    MAX_NAME_TOTAL,
    MAX_PATH_BYTES,
    path_key,
    stored_size,
)
from voltool.words import quoted

TYPES = ("file", "dir", "symlink", "char", "block", "fifo")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FIELDS = ("path", "type", "mode", "uid", "gid", "size", "mtime", "sha256", "target", "link", "dev")


@dataclass(frozen=True, slots=True)
class ManifestEntry:
    path: str
    type: str
    mode: int
    uid: int
    gid: int
    size: int = 0
    mtime: int = 0
    sha256: str | None = None  # regular files
    target: str | None = None  # symlinks
    link: str | None = None  # hard-link group: its smallest path
    dev: str | None = None  # "major,minor" of char and block devices

    def as_dict(self, with_mtime: bool = True) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every value, and this runs
        # twice per entry (a third of a snapshot's CPU time for small files).
        d = {k: v for k in _FIELDS if (v := getattr(self, k)) is not None}
        if not with_mtime:
            d.pop("mtime", None)
        return d

    def line(self) -> str:
        """The canonical JSON line of this entry (no newline)."""
        return _canonical(self.as_dict())

    def digest_line(self) -> str:
        return _canonical(self.as_dict(with_mtime=False))

    @classmethod
    def trusted(cls, line: str) -> ManifestEntry:
        """An entry from a line voltool checked before it stored it."""
        return cls(**json.loads(line))

    @classmethod
    def from_line(cls, line: str) -> ManifestEntry:
        """Parse one manifest line, checking every field; raises IntegrityError."""
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):
            raise IntegrityError(f"manifest line is not JSON: {quoted(line[:80])}") from None
        if not isinstance(raw, dict) or set(raw) - set(_FIELDS):
            raise IntegrityError(f"manifest line has unknown fields: {quoted(line[:80])}")
        try:
            entry = cls(**raw)
        except TypeError:
            raise IntegrityError(f"manifest line lacks fields: {quoted(line[:80])}") from None
        entry.check()
        return entry

    def check(self) -> None:
        def bad(why: str) -> IntegrityError:
            return IntegrityError(f"manifest entry {quoted(self.path)}: {why}")

        if not isinstance(self.path, str) or not _is_normal_path(self.path):
            raise bad("path is not normalised")
        if self.target is not None and (
            not isinstance(self.target, str) or _encoded(self.target) > MAX_PATH_BYTES
        ):
            raise bad(f"target is not text of at most {MAX_PATH_BYTES} bytes")
        if self.type not in TYPES:
            raise bad(f"unknown type {quoted(self.type)}")
        for name in ("sha256", "target", "link", "dev"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise bad(f"{name} is not text")
        for name in ("mode", "uid", "gid", "size", "mtime"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(f"{name} is not an integer")
            if value < 0 and name != "mtime":  # files older than 1970 exist
                raise bad(f"{name} is negative")
        if self.mode > 0o7777:
            raise bad("mode has bits beyond 07777")
        if (self.type == "file") != (self.sha256 is not None):
            raise bad("sha256 belongs to regular files only")
        if self.sha256 is not None and not _HEX64.fullmatch(self.sha256):
            raise bad("sha256 is not 64 hex digits")
        if (self.type == "symlink") != isinstance(self.target, str):
            raise bad("target belongs to symlinks only")
        if self.link is not None and (self.type != "file" or not _is_normal_path(self.link)):
            raise bad("link belongs to regular files only, as a normalised path")
        if self.type != "file" and self.size:
            raise bad("only regular files have a size")
        if self.path == "." and self.type != "dir":
            raise bad("the root must be a directory")


def _canonical(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _is_normal_path(path: str) -> bool:
    """Relative, normalised, and within the validator's length bounds."""
    if path == ".":
        return True
    if not path or path.startswith("/") or "\0" in path or _encoded(path) > MAX_PATH_BYTES:
        return False
    return all(
        part not in ("", ".", "..") and _encoded(part) <= MAX_NAME_BYTES for part in path.split("/")
    )


def _encoded(text: str) -> int:
    """The bytes `text` takes as a name on disk; more than any bound if it has no
    spelling of its own in bytes (a surrogate that the "surrogateescape" round
    trip would not give back as it is: "\\udcc3\\udca9" would be "é" on disk)."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return _UNSPELLABLE
    return len(raw) if raw.decode("utf-8", "surrogateescape") == text else _UNSPELLABLE


_UNSPELLABLE = 1 << 62


# The longest canonical line: a path and a link target of 4032 bytes each, every
# byte escaped as \udcXX in the worst case, and the other fields.
MAX_LINE = 64 * 1024


def split_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> Iterator[bytes]:
    """The newline-terminated lines of a stream, without their newlines; bounded in length."""
    rest = b""
    for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            if len(line) > max_line:
                raise IntegrityError(f"manifest has a line over {max_line} bytes")
            yield line
        if len(rest) > max_line:
            raise IntegrityError(f"manifest has a line over {max_line} bytes")
    if rest:
        raise IntegrityError("manifest does not end with a newline")


class Manifest:
    """An immutable set of entries keyed by path, in canonical (sorted) order.

    Held in a `spill.Table` (path key -> canonical line), not on the heap: a
    manifest of millions of entries costs a bounded amount of memory.
    """

    def __init__(self, entries: Iterable[ManifestEntry] = ()) -> None:
        self._table = Table()
        with _no_duplicates():
            for e in entries:
                self._table.add(path_key(e.path), e.line())
            self._table.flush()  # a duplicate raises here, not at first use
        self._summary: Summary | None = None

    @classmethod
    def _of(cls, table: Table, summary: Summary | None = None) -> Manifest:
        m = cls.__new__(cls)
        m._table = table
        m._summary = summary
        return m

    def __len__(self) -> int:
        return self.summary.entries

    def __iter__(self) -> Iterator[ManifestEntry]:
        for line in self._table.values():
            yield ManifestEntry.trusted(line)

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and path_key(path) in self._table

    def get(self, path: str) -> ManifestEntry | None:
        line = self._table.get(path_key(path))
        return None if line is None else ManifestEntry.trusted(line)

    @property
    def root(self) -> ManifestEntry | None:
        return self.get(".")

    @property
    def summary(self) -> Summary:
        """Entry count, content bytes, tree digest and manifest size, from one pass."""
        if self._summary is None:
            self._summary = _summarize(self._table.values(), check=False)
        return self._summary

    def content_bytes(self) -> int:
        """Bytes of content, each hard-link group counted once."""
        return self.summary.content

    def digest(self) -> str:
        return self.summary.digest

    def lines(self) -> Iterator[bytes]:
        for line in self._table.values():
            yield line.encode() + b"\n"

    def chunks(self, size: int = 64 * 1024) -> Iterator[bytes]:
        """manifest.jsonl (`summary.size` bytes) in pieces of about `size` bytes."""
        out: list[bytes] = []
        n = 0
        for line in self.lines():
            out.append(line)
            n += len(line)
            if n >= size:
                yield b"".join(out)
                out, n = [], 0
        if out:
            yield b"".join(out)

    @classmethod
    def parse(cls, lines: Iterable[bytes], max_entries: int | None = None) -> Manifest:
        """Parse manifest.jsonl's lines (no newlines); every line and the link groups are checked.

        Strict: every line is one entry in canonical form (no blank lines, no
        other spelling of the same JSON), and there are at most `max_entries`.
        """
        m = cls()
        with _no_duplicates():
            m._add_lines(lines, max_entries)
        m._check_links()
        return m

    def _add_lines(self, lines: Iterable[bytes], max_entries: int | None) -> None:
        names = 0  # bounded as the validator bounds the names it remembers
        for count, raw in enumerate(lines):
            if max_entries is not None and count >= max_entries:
                raise IntegrityError(f"manifest has more than {max_entries} entries")
            try:
                text = raw.decode("ascii")  # canonical lines are pure ASCII
            except UnicodeDecodeError:
                raise IntegrityError("manifest has a line that is not ASCII") from None
            entry = ManifestEntry.from_line(text)
            if entry.line() != text:
                raise IntegrityError(f"manifest line is not canonical: {quoted(text[:80])}")
            names += sum(stored_size(t) for t in (entry.path, entry.target or "", entry.link or ""))
            if names > MAX_NAME_TOTAL:
                raise IntegrityError(f"manifest names take more than {MAX_NAME_TOTAL} bytes")
            self._table.add(path_key(entry.path), text)
        self._table.flush()

    @classmethod
    def read(cls, chunks: Iterable[bytes], max_entries: int) -> Manifest:
        """Parse manifest.jsonl as it streams in: never more than a line of it held at once."""
        return cls.parse(split_lines(chunks), max_entries)

    def _check_links(self) -> None:
        for e in self:
            if e.link is None:
                continue
            head = self.get(e.link)
            if head is None or head.link != e.link or head.sha256 != e.sha256:
                raise IntegrityError(f"manifest entry {quoted(e.path)}: broken hard-link group")
            if path_key(e.link) > path_key(e.path):
                raise IntegrityError(
                    f"manifest entry {quoted(e.path)}: link is not the group's smallest path"
                )


@dataclass(frozen=True)
class Summary:
    entries: int
    content: int  # bytes of content, each hard-link group once
    digest: str  # the tree digest
    size: int  # bytes of manifest.jsonl
    linked: int  # entries in hard-link groups


def _summarize(lines: Iterable[str], check: bool) -> Summary:
    h = hashlib.sha256()
    entries = content = size = linked = 0
    for line in lines:
        e = ManifestEntry.trusted(line)
        if check:
            e.check()
        entries += 1
        size += len(line) + 1
        if e.type == "file" and e.link in (None, e.path):
            content += e.size
        linked += e.link is not None
        h.update(_without_mtime(line).encode())
        h.update(b"\n")
    return Summary(entries, content, h.hexdigest(), size, linked)


# In a canonical line the keys are sorted and "mode" always precedes "mtime": the
# first ',"mtime":' is the key (a quote inside a string value is escaped).
_MTIME = re.compile(r',"mtime":-?[0-9]+')


def _without_mtime(line: str) -> str:
    """`ManifestEntry.trusted(line).digest_line()`, without parsing the line."""
    return _MTIME.sub("", line, count=1)


@contextlib.contextmanager
def _no_duplicates() -> Iterator[None]:
    """A path added twice to a manifest's table, as the integrity error it is."""
    try:
        yield
    except Duplicate as e:
        raise IntegrityError(f"manifest lists {quoted(_path_of(e.args[0]))} twice") from None


def _path_of(key: bytes) -> str:
    return key.decode("utf-8", "surrogateescape")


def merge(a: Manifest, b: Manifest) -> Iterator[tuple[ManifestEntry | None, ManifestEntry | None]]:
    """The entries of `a` and `b` paired by path, in path order (None where one lacks it)."""
    left, right = iter(a), iter(b)
    x, y = next(left, None), next(right, None)
    while x is not None or y is not None:
        kx = path_key(x.path) if x is not None else None
        ky = path_key(y.path) if y is not None else None
        if ky is None or (kx is not None and kx < ky):
            yield x, None
            x = next(left, None)
        elif kx is None or ky < kx:
            yield None, y
            y = next(right, None)
        else:
            yield x, y
            x, y = next(left, None), next(right, None)


class ManifestBuilder:
    """Collects entries as a stream arrives and resolves hard-link groups at the end.

    Like `Manifest`, it keeps its entries in tables, not on the heap.
    """

    def __init__(self) -> None:
        self._entries = Table()  # path key -> canonical line
        # (the group's first file's key, NUL, the link's key) -> "": a group's members
        # are adjacent, in path order.
        self._links = Table()

    def add(self, entry: ManifestEntry) -> None:
        self._entries[path_key(entry.path)] = entry.line()

    def add_hardlink(self, path: str, target: str, mtime: int) -> ManifestEntry:
        """Record `path` as a hard link to the earlier file `target`; return its entry.

        Until `build`, a group's members name the group's first file as `link`.
        """
        head = self.get(target)
        if head is None:
            raise KeyError(target)
        first = head.link or target  # a link to a link joins the first file's group
        if head.link is None:
            self._entries[path_key(target)] = replace(head, link=first).line()
        entry = replace(head, path=path, mtime=mtime, link=first)
        self._entries[path_key(path)] = entry.line()
        self._links[path_key(first) + b"\0" + path_key(path)] = ""
        return entry

    def get(self, path: str) -> ManifestEntry | None:
        line = self._entries.get(path_key(path))
        return None if line is None else ManifestEntry.trusted(line)

    def build(self) -> Manifest:
        """The manifest: each group's members name its smallest path; every entry checked."""
        group = b""
        smallest = ""
        for key, _ in self._links.items():
            first, _, member = key.partition(b"\0")
            if first != group:
                # Members come in path order: the first of a group is its smallest link.
                group = first
                smallest = _path_of(min(first, member))
                self._relink(_path_of(first), smallest)
            self._relink(_path_of(member), smallest)
        self._links.close()
        # Never commit what could not be read back.
        summary = _summarize(self._entries.values(), check=True)
        return Manifest._of(self._entries, summary)

    def _relink(self, path: str, smallest: str) -> None:
        entry = self.get(path)
        assert entry is not None
        self._entries[path_key(path)] = replace(entry, link=smallest).line()


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # "added" | "removed" | "changed"
    what: tuple[str, ...] = ()  # for "changed": the fields that differ


def diff(old: Manifest, new: Manifest) -> Iterator[Change]:
    """What turns `old` into `new`, in path order; mtime-only differences do not count."""
    for a, b in merge(old, new):
        if b is None:
            assert a is not None
            yield Change(a.path, "removed")
        elif a is None:
            yield Change(b.path, "added")
        elif a.digest_line() != b.digest_line():
            x, y = a.as_dict(False), b.as_dict(False)
            yield Change(a.path, "changed", tuple(k for k in _FIELDS if x.get(k) != y.get(k)))


@dataclass(frozen=True)
class ChangeSummary:
    """How many entries a diff adds, changes and removes, and the first few of them."""

    added: int
    changed: int
    removed: int
    first: tuple[Change, ...]

    @property
    def total(self) -> int:
        return self.added + self.changed + self.removed

    def counts(self) -> dict[str, int]:
        return {"added": self.added, "changed": self.changed, "removed": self.removed}


def summarize(changes: Iterable[Change], keep: int = 20) -> ChangeSummary:
    """Counts and the first `keep` changes: bounded memory however large the diff."""
    counts = {"added": 0, "changed": 0, "removed": 0}
    first: list[Change] = []
    for c in changes:
        counts[c.kind] += 1
        if len(first) < keep:
            first.append(c)
    return ChangeSummary(counts["added"], counts["changed"], counts["removed"], tuple(first))
