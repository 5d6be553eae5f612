"""The rules every tar entry must pass before voltool forwards it to the engine.

Guarantee: a stream accepted entry by entry by one `EntryValidator`, extracted
under a directory D, writes only inside D. For that it holds, for each entry:
- its name is relative and normalised: no leading "/", no ".." or "." part
  (a leading "./" aside), no empty part, no NUL, within length bounds;
- it lies under the expected top directory, when one is expected;
- no ancestor of it is a symlink or any other non-directory seen earlier;
- it does not repeat an earlier path (a directory may repeat as a directory);
- a hard link names an earlier regular file of the same stream;
- its type is allowed (devices and FIFOs only when asked for);
- the running entry count and byte total stay under the caps, and the bytes
  under the free space found in pre-flight, checked from the header, before
  any content is read: a bomb is stopped at its first header over a cap.
"""

from __future__ import annotations

from dataclasses import dataclass

from voltool.errors import ArchiveRejected, NoSpace
from voltool.store.spill import Table
from voltool.tar.stream import EntryType, TarEntry
from voltool.words import quoted

# PATH_MAX is 4096 for the full path the engine extracts to; keep room for
# voltool's own prefixes ("/v/.voltool-stage-<op>/", "/snap/data/").
MAX_PATH_BYTES = 4096 - 64
MAX_NAME_BYTES = 255

DEFAULT_MAX_ENTRIES = 10_000_000
DEFAULT_MAX_BYTES = 1 << 40  # 1 TiB
# What the validator remembers is the names it has seen: bound them in total,
# so that long names cannot buy temporary disk (spill.py) that the entry cap
# does not count.
MAX_NAME_TOTAL = 256 << 20
# What the engine's filesystem spends on an entry beyond its content (inode,
# directory entry, blocks rounded up): charged against the free space.
PER_ENTRY_COST = 4096


@dataclass(frozen=True)
class Limits:
    max_entries: int = DEFAULT_MAX_ENTRIES
    max_bytes: int = DEFAULT_MAX_BYTES
    allow_special: bool = False
    free_bytes: int | None = None  # room found in pre-flight, for content and entries
    free_inodes: int | None = None  # inodes found in pre-flight
    read_only: bool = False  # the stream is only read (a digest), never written back
    max_names: int = MAX_NAME_TOTAL  # bytes of names and link targets, in total


_SPECIAL = (EntryType.CHAR, EntryType.BLOCK, EntryType.FIFO)
_IMPLIED = "implied"


class EntryValidator:
    """Checks a stream's entries in order; keeps what it needs of the ones before.

    `top` is the directory whose contents are the tree ("data" for a stream of
    `/data`), or None when the stream's own root is the tree ("./x" or "x").
    """

    def __init__(self, top: str | None, limits: Limits = Limits()) -> None:
        self._top = top
        self._limits = limits
        # Every path seen: its type's value (hard links as "file"), or _IMPLIED for a
        # directory only deeper entries named. On disk past a bound (spill.py).
        self._seen = Table()
        self._last_dir = ""  # the last parent found to be a directory: siblings come together
        self.entries = 0
        self.bytes = 0
        self._names = 0  # bytes of names and link targets remembered

    def name_of(self, rel: str) -> str:
        """The member name under which this stream would carry `rel`."""
        return rel if self._top is None else f"{self._top}/{rel}"

    def seen(self, rel: str) -> bool:
        """True if `rel` was an entry, or a directory implied by one, of this stream."""
        return self._kind(rel) is not None

    def _kind(self, rel: str) -> str | None:
        return self._seen.get(path_key(rel))

    def _mark(self, rel: str, kind: str) -> None:
        self._seen[path_key(rel)] = kind

    def check(self, entry: TarEntry) -> str:
        """Return the entry's path relative to the tree ("." for its root), or raise."""
        rel = self.relative(entry.name, entry.name)
        name = entry.name
        self.entries += 1
        if self.entries > self._limits.max_entries:
            raise ArchiveRejected(name, f"more than {self._limits.max_entries} entries")
        if entry.type is EntryType.FILE:
            self.bytes += entry.size
            if self.bytes > self._limits.max_bytes:
                raise ArchiveRejected(name, f"more than {self._limits.max_bytes} bytes of content")
        self._check_room(name)
        self._count_names(name, stored_size(rel) + stored_size(entry.linkname))
        if entry.type in _SPECIAL and not self._limits.allow_special:
            raise ArchiveRejected(name, f"{entry.type.value} entries are not allowed")
        if entry.type is EntryType.SYMLINK:
            _check_link_text(name, entry.linkname)
            if not self._limits.read_only:
                _check_link_climb(name, rel, entry.linkname)
        if rel == ".":
            if entry.type is not EntryType.DIR:
                raise ArchiveRejected(name, "the root of the tree must be a directory")
        else:
            self._check_ancestors(name, rel)
        seen = self._kind(rel)
        if seen == _IMPLIED:
            if entry.type is not EntryType.DIR:
                raise ArchiveRejected(
                    name, "a non-directory replaces a directory of earlier entries"
                )
        elif seen is not None and not (seen == "dir" and entry.type is EntryType.DIR):
            raise ArchiveRejected(name, f"duplicate entry (first seen as a {seen})")
        if entry.type is EntryType.HARDLINK:
            target = self.relative(entry.linkname, name)
            if self._kind(target) != "file" or target == rel:
                raise ArchiveRejected(
                    name, f"hard link to {quoted(entry.linkname)}, not an earlier file"
                )
            self._mark(rel, "file")
        elif seen != entry.type.value:
            self._mark(rel, entry.type.value)
        return rel

    def link_target(self, entry: TarEntry) -> str:
        """A checked hard link's target, relative to the tree."""
        return self.relative(entry.linkname, entry.name)

    def relative(self, raw: str, entry: str) -> str:
        """`raw` (a member name or hard-link target) relative to the tree, or raise."""
        if not raw:
            # A member named "/" arrives as "" once its trailing slash is stripped.
            raise ArchiveRejected(entry, "empty name")
        if "\0" in raw:
            raise ArchiveRejected(entry, "NUL byte in a name")
        if raw.startswith("/"):
            raise ArchiveRejected(entry, "absolute path")
        if len(raw.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
            raise ArchiveRejected(entry, f"name longer than {MAX_PATH_BYTES} bytes")
        parts = raw.split("/")
        if len(parts) > 1 and parts[-1] == "":
            parts.pop()  # a directory's trailing slash ("./" and "a/" alike)
        while len(parts) > 1 and parts[0] == ".":
            parts.pop(0)
        if parts == ["."]:
            parts = []
        for part in parts:
            if part == "..":
                raise ArchiveRejected(entry, "'..' in a name")
            if part in ("", "."):
                raise ArchiveRejected(entry, "name is not normalised")
            if len(part.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
                raise ArchiveRejected(entry, f"a name part is longer than {MAX_NAME_BYTES} bytes")
        if self._top is not None:
            if not parts or parts[0] != self._top:
                raise ArchiveRejected(entry, f"entry outside the archive's {self._top}/ directory")
            parts = parts[1:]
        return "/".join(parts) if parts else "."

    def _check_ancestors(self, name: str, rel: str) -> None:
        parent = rel.rpartition("/")[0]
        if parent == self._last_dir:
            return  # a directory stays one: a later entry of its path must be a directory
        self._last_dir = ""
        while parent:
            seen = self._kind(parent)
            if seen == "dir" or seen == _IMPLIED:
                break  # its own ancestors were checked when it arrived
            if seen == "symlink":
                raise ArchiveRejected(name, f"written through the symlink {quoted(parent)}")
            if seen is not None:
                raise ArchiveRejected(name, f"parent {quoted(parent)} is not a directory")
            self._mark(parent, _IMPLIED)
            self._count_names(name, stored_size(parent))
            parent = parent.rpartition("/")[0]
        self._last_dir = rel.rpartition("/")[0]

    def _count_names(self, name: str, n: int) -> None:
        self._names += n
        if self._names > self._limits.max_names:
            raise ArchiveRejected(
                name, f"names and link targets take more than {self._limits.max_names} bytes"
            )

    def _check_room(self, name: str) -> None:
        """Content and entries so far fit the free space and inodes found in pre-flight."""
        free, inodes = self._limits.free_bytes, self._limits.free_inodes
        if free is not None and self.bytes + self.entries * PER_ENTRY_COST > free:
            raise NoSpace(
                f"archive needs more than the {free // 2**20} MiB free for it "
                f"(stopped at {quoted(name)})"
            )
        if inodes is not None and self.entries > inodes:
            raise NoSpace(
                f"archive has more entries than the {inodes} free inodes "
                f"(stopped at {quoted(name)})"
            )


def path_key(path: str) -> bytes:
    """Sort and lookup key: the path's bytes, so order does not depend on the locale."""
    return path.encode("utf-8", "surrogateescape")


def stored_size(text: str) -> int:
    """About what `text` costs to keep: a string of any non-ASCII character
    takes up to 4 bytes per character."""
    return len(text) if text.isascii() else 4 * len(text)


def _check_link_climb(name: str, rel: str, target: str) -> None:
    """Refuse a relative symlink that resolves more than one level above the tree's root.

    dockerd refuses to write a symlink whose target, joined to its directory,
    leaves the directory it extracts into; voltool always extracts the tree
    one level down (data/, or a restore's staging directory). Failing here
    names the link, before anything is written.
    """
    if target.startswith("/"):
        return  # joined to the extraction directory, it stays inside
    depth = rel.count("/")  # levels of the link's own directory below the root
    for part in target.split("/"):
        if part == "..":
            depth -= 1
            if depth < -1:
                raise ArchiveRejected(
                    name,
                    f"symlink to {quoted(target)} climbs above the volume's root: "
                    "the Docker archive API refuses to write it",
                )
        elif part not in ("", "."):
            depth += 1


def _check_link_text(name: str, target: str) -> None:
    if not target:
        raise ArchiveRejected(name, "symlink with an empty target")
    if "\0" in target:
        raise ArchiveRejected(name, "NUL byte in a symlink target")
    if len(target.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise ArchiveRejected(name, f"symlink target longer than {MAX_PATH_BYTES} bytes")
