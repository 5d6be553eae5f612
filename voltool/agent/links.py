"""Hard-link groups, found as the walk meets their members.

A group is the set of paths of one inode (dev, ino), unchanged (ctime, size, mtime)
between its members: an inode number can be freed and given to a new file while
a walk goes on, which must not join the new file to the old one's group. Its first member in
stream order is written as an ordinary file; every later member names that
first path in its `link` field and copies its content fields, so all members
of a group agree.

Memory: one item per inode with nlink > 1 whose members have not all been
met yet; in a source tree every group completes and is forgotten. A stored
tree's files are shared with other snapshots, so their link counts say
nothing of the tree's own groups (a group would never complete, and every
file would be held): there the groups are the manifest's (`expected`), and
only their first members are remembered, until their last member is met.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import replace

from .entry import Entry


class LinkGroups:
    def __init__(self, expected: dict[bytes, int] | None = None) -> None:
        # (dev, ino) -> [the group's first entry, members not met yet]
        self._open: dict[tuple[int, int], tuple[Entry, list[int]]] = {}
        # A stored tree's groups: first member's path_key -> how many later members.
        self._expected = expected

    def member(self, path: bytes, st: os.stat_result) -> Entry | None:
        """If `st` is an inode met before, the entry for `path` as a member of its group."""
        if st.st_nlink < 2:
            return None
        key = (st.st_dev, st.st_ino)
        found = self._open.get(key)
        if found is None:
            return None
        first, left = found
        if (st.st_ctime_ns, st.st_size, st.st_mtime_ns) != (
            first.ctime_ns,
            first.size,
            first.mtime_ns,
        ):
            # Not the inode met before: its number was freed and given to a new file since
            # (or the file changed between its names): never merged with the first one.
            del self._open[key]
            return None
        left[0] -= 1
        if left[0] <= 0:
            del self._open[key]
        return replace(first, path=path, link=first.path)

    def first(self, entry: Entry, st: os.stat_result) -> None:
        """Remember `entry` (of inode `st`) as the first member of its group, if it has others."""
        if st.st_nlink < 2:
            return
        if self._expected is None:
            self._open[(st.st_dev, st.st_ino)] = (entry, [st.st_nlink - 1])
        elif (key := path_key(entry.path)) in self._expected:
            self._open[(st.st_dev, st.st_ino)] = (entry, [self._expected.pop(key)])


def path_key(path: bytes) -> bytes:
    """A path as `expected_groups` keeps it: a fixed 16 bytes, however long the path (a
    forged manifest of long link paths, compressed, must not cost memory a thousandfold)."""
    return hashlib.blake2b(path, digest_size=16).digest()


def expected_groups(lines: Iterable[bytes]) -> dict[bytes, int]:
    """A manifest's hard-link groups: each first member's `path_key`, and how many later
    members name it (their `link`). Memory: one small item per group, not per entry.
    Raises ValueError on a malformed line."""
    found: dict[bytes, int] = {}
    for line in lines:
        # Only a line with a "link" key parses to a member: the key cannot appear
        # unescaped inside a string value, and Entry.parse decides anyway.
        if b'"link":' in line:
            link = Entry.parse(line).link
            if link is not None:
                key = path_key(link)
                found[key] = found.get(key, 0) + 1
    return found


class InodeFilter:
    """The inode numbers seen so far, in a fixed amount of memory (a Bloom filter).

    `add` says whether a number is new. It can wrongly say "seen before" (more
    rarely the fewer numbers were added: about 1 in 20 after ten million), never
    wrongly "new"; so it serves where "seen before" only costs a copy.
    """

    BITS = 1 << 26  # 8 MiB, allocated on first use
    _HASHES = 3

    def __init__(self) -> None:
        self._bits: bytearray | None = None

    def add(self, ino: int) -> bool:
        """Record `ino`; True if it was surely not recorded before."""
        if self._bits is None:
            self._bits = bytearray(self.BITS // 8)
        digest = hashlib.blake2b(ino.to_bytes(16, "little", signed=True), digest_size=12).digest()
        new = False
        for i in range(self._HASHES):
            bit = int.from_bytes(digest[4 * i : 4 * i + 4], "little") % self.BITS
            byte, mask = bit >> 3, 1 << (bit & 7)
            if not self._bits[byte] & mask:
                new = True
                self._bits[byte] |= mask
        return new
