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

import hashlib
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from voltool.errors import IntegrityError
from voltool.validate import MAX_NAME_BYTES, MAX_NAME_TOTAL, MAX_PATH_BYTES, stored_size

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
    def from_line(cls, line: str) -> ManifestEntry:
        """Parse one manifest line, checking every field; raises IntegrityError."""
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):
            raise IntegrityError(f"manifest line is not JSON: {line[:80]!r}") from None
        if not isinstance(raw, dict) or set(raw) - set(_FIELDS):
            raise IntegrityError(f"manifest line has unknown fields: {line[:80]!r}")
        try:
            entry = cls(**raw)
        except TypeError:
            raise IntegrityError(f"manifest line lacks fields: {line[:80]!r}") from None
        entry.check()
        return entry

    def check(self) -> None:
        def bad(why: str) -> IntegrityError:
            return IntegrityError(f"manifest entry {self.path!r}: {why}")

        if not isinstance(self.path, str) or not _is_normal_path(self.path):
            raise bad("path is not normalised")
        if self.target is not None and (
            not isinstance(self.target, str) or _encoded(self.target) > MAX_PATH_BYTES
        ):
            raise bad(f"target is not text of at most {MAX_PATH_BYTES} bytes")
        if self.type not in TYPES:
            raise bad(f"unknown type {self.type!r}")
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
    return len(text.encode("utf-8", "surrogateescape"))


# The longest canonical line: a path and a link target of 4032 bytes each, every
# byte escaped as \udcXX in the worst case, and the other fields.
MAX_LINE = 64 * 1024


def split_lines(chunks: Iterable[bytes], max_line: int = MAX_LINE) -> Iterator[bytes]:
    """The newline-terminated lines of a stream, without their newlines; bounded in length."""
    rest = b""
    for chunk in chunks:
        *lines, rest = (rest + chunk).split(b"\n")
        yield from lines
        if len(rest) > max_line:
            raise IntegrityError(f"manifest has a line over {max_line} bytes")
    if rest:
        raise IntegrityError("manifest does not end with a newline")


def path_key(path: str) -> bytes:
    """Sort key: the path's bytes, so order does not depend on the locale."""
    return path.encode("utf-8", "surrogateescape")


class Manifest:
    """An immutable set of entries keyed by path, in canonical (sorted) order."""

    def __init__(self, entries: Iterable[ManifestEntry]) -> None:
        self._by_path: dict[str, ManifestEntry] = {}
        for e in sorted(entries, key=lambda e: path_key(e.path)):
            if e.path in self._by_path:
                raise IntegrityError(f"manifest lists {e.path!r} twice")
            self._by_path[e.path] = e

    def __len__(self) -> int:
        return len(self._by_path)

    def __iter__(self) -> Iterator[ManifestEntry]:
        return iter(self._by_path.values())

    def __contains__(self, path: object) -> bool:
        return path in self._by_path

    def get(self, path: str) -> ManifestEntry | None:
        return self._by_path.get(path)

    @property
    def root(self) -> ManifestEntry | None:
        return self._by_path.get(".")

    def content_bytes(self) -> int:
        """Bytes of content, each hard-link group counted once."""
        return sum(e.size for e in self if e.type == "file" and e.link in (None, e.path))

    def digest(self) -> str:
        h = hashlib.sha256()
        for e in self:
            h.update(e.digest_line().encode())
            h.update(b"\n")
        return h.hexdigest()

    def lines(self) -> Iterator[bytes]:
        for e in self:
            yield e.line().encode() + b"\n"

    @classmethod
    def parse(cls, lines: Iterable[bytes], max_entries: int | None = None) -> Manifest:
        """Parse manifest.jsonl's lines (no newlines); every line and the link groups are checked.

        Strict: every line is one entry in canonical form (no blank lines, no
        other spelling of the same JSON), and there are at most `max_entries`.
        """
        entries: list[ManifestEntry] = []
        names = 0  # bounded as the validator bounds the names it remembers
        for raw in lines:
            if max_entries is not None and len(entries) >= max_entries:
                raise IntegrityError(f"manifest has more than {max_entries} entries")
            try:
                text = raw.decode("ascii")  # canonical lines are pure ASCII
            except UnicodeDecodeError:
                raise IntegrityError("manifest has a line that is not ASCII") from None
            entry = ManifestEntry.from_line(text)
            if entry.line() != text:
                raise IntegrityError(f"manifest line is not canonical: {text[:80]!r}")
            names += sum(stored_size(t) for t in (entry.path, entry.target, entry.link) if t)
            if names > MAX_NAME_TOTAL:
                raise IntegrityError(f"manifest names take more than {MAX_NAME_TOTAL} bytes")
            entries.append(entry)
        m = cls(entries)
        m._check_links()
        return m

    @classmethod
    def read(cls, chunks: Iterable[bytes], max_entries: int) -> Manifest:
        """Parse manifest.jsonl as it streams in: never more than a line of it held at once."""
        return cls.parse(split_lines(chunks), max_entries)

    def _check_links(self) -> None:
        for e in self:
            if e.link is None:
                continue
            head = self._by_path.get(e.link)
            if head is None or head.link != e.link or head.sha256 != e.sha256:
                raise IntegrityError(f"manifest entry {e.path!r}: broken hard-link group")
            if path_key(e.link) > path_key(e.path):
                raise IntegrityError(
                    f"manifest entry {e.path!r}: link is not the group's smallest path"
                )


class ManifestBuilder:
    """Collects entries as a stream arrives and resolves hard-link groups at the end."""

    def __init__(self) -> None:
        self._entries: dict[str, ManifestEntry] = {}
        self._link_to: dict[str, str] = {}  # hard-link path -> the path it links to

    def add(self, entry: ManifestEntry) -> None:
        self._entries[entry.path] = entry

    def add_hardlink(self, path: str, target: str, mtime: int) -> None:
        head = self._entries[target]
        self._entries[path] = replace(head, path=path, mtime=mtime)
        self._link_to[path] = self._link_to.get(target, target)  # the group's first file

    def get(self, path: str) -> ManifestEntry | None:
        return self._entries.get(path)

    def build(self) -> Manifest:
        groups: dict[str, list[str]] = {}
        for path, target in self._link_to.items():
            root = target  # add_hardlink stored the group's first file: no chains to walk
            groups.setdefault(root, [root]).append(path)
        for members in groups.values():
            smallest = min(members, key=path_key)
            for p in members:
                self._entries[p] = replace(self._entries[p], link=smallest)
        # Never commit what could not be read back.
        for e in self._entries.values():
            e.check()
        return Manifest(self._entries.values())


@dataclass(frozen=True)
class Change:
    path: str
    kind: str  # "added" | "removed" | "changed"
    what: tuple[str, ...] = ()  # for "changed": the fields that differ


def diff(old: Manifest, new: Manifest) -> list[Change]:
    """What turns `old` into `new`, by path; mtime-only differences do not count."""
    changes: list[Change] = []
    for e in old:
        other = new.get(e.path)
        if other is None:
            changes.append(Change(e.path, "removed"))
        elif e.digest_line() != other.digest_line():
            a, b = e.as_dict(False), other.as_dict(False)
            fields = tuple(k for k in _FIELDS if a.get(k) != b.get(k))
            changes.append(Change(e.path, "changed", fields))
    changes.extend(Change(e.path, "added") for e in new if e.path not in old)
    changes.sort(key=lambda c: path_key(c.path))
    return changes
