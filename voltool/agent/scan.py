"""Listing a tree as manifest entries: lstat, xattrs, link targets, content hashes.

Guarantees for a file that changes while it is read: its content is hashed
up to the size fstat gave before the read (never further: a file that grows
as fast as it is read has no EOF), then fstat is compared with the fstat
taken when it was opened; if size, mtime or ctime moved (or the bytes read
differ from the size), it is read again, up to `walk.RETRIES` times. If it
never holds still, the entry records the last read: `size` is the number of
bytes hashed, the metadata is that of the open before the read (so a later
comparison sees the change), and the file is counted as `unstable` with a
warning.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Iterator

from . import xattrs
from .entry import Entry, type_of
from .links import LinkGroups
from .report import Reporter
from .walk import RETRIES, Changed, Kind, Node, Vanished, open_regular, relook, walk

CHUNK = 1 << 20


def hash_fd(fd: int, buf: bytearray | None = None, limit: int | None = None) -> tuple[str, int]:
    """SHA-256 (hex) and length of the content of `fd`, read from offset 0 to EOF, or to
    `limit` bytes: a file that a writer keeps ahead of the reader has no EOF."""
    buf = buf if buf is not None else bytearray(CHUNK)
    view = memoryview(buf)
    h = hashlib.sha256()
    os.lseek(fd, 0, os.SEEK_SET)
    total = 0
    while limit is None or total < limit:
        want = len(buf) if limit is None else min(len(buf), limit - total)
        n = os.readv(fd, [view[:want]])
        if not n:
            break
        h.update(view[:n])
        total += n
    return h.hexdigest(), total


def same_content_stat(a: os.stat_result, b: os.stat_result) -> bool:
    """Whether nothing a write changes (size, mtime, ctime) moved between `a` and `b`."""
    return (a.st_size, a.st_mtime_ns, a.st_ctime_ns) == (b.st_size, b.st_mtime_ns, b.st_ctime_ns)


class Scanner:
    """Makes the entries of a tree, in stream order."""

    def __init__(self, reporter: Reporter, groups: LinkGroups | None = None) -> None:
        self.reporter = reporter
        self.groups = groups if groups is not None else LinkGroups()
        self._buf = bytearray(CHUNK)

    def entries(self, root_fd: int) -> Iterator[Entry]:
        counts = self.reporter.counts

        def vanished() -> None:
            counts.vanished += 1

        for kind, node in walk(root_fd, self.reporter.error, vanished):
            if kind is Kind.LEAVE:
                continue
            entry = self.entry(node)
            if entry is not None:
                yield entry

    def entry(self, node: Node) -> Entry | None:
        """The entry for `node`; None if it vanished or failed (reported)."""
        try:
            for _ in range(RETRIES):
                try:
                    return self._entry(node)
                except Changed:
                    node = relook(node)
                    if stat.S_ISDIR(node.st.st_mode):  # not a directory when listed
                        self.reporter.warning(node.path, "became a directory while read")
                        raise Vanished from None
            self.reporter.error(node.path, "open", "kept changing while read")
        except Vanished:
            self.reporter.counts.vanished += 1
        except OSError as e:
            self.reporter.error(node.path, "read", e)
        return None

    def _entry(self, node: Node) -> Entry:
        if node.fd != -1:  # a directory, already open
            return Entry.of(node.path, node.st, xattrs=xattrs.read(node.fd))
        kind = type_of(node.st)
        if kind == "file":
            return self._file(node)
        target = None
        if kind == "symlink":
            try:
                target = os.readlink(node.name, dir_fd=node.parent_fd)
            except FileNotFoundError:
                raise Vanished from None
            except OSError as e:
                if e.errno == 22:  # EINVAL: not a symlink any more
                    raise Changed from None
                raise
        try:
            found = xattrs.read(node.name, node.parent_fd)
        except FileNotFoundError:
            raise Vanished from None
        return Entry.of(node.path, node.st, target=target, xattrs=found)

    def _file(self, node: Node) -> Entry:
        member = self.groups.member(node.path, node.st)
        if member is not None:  # the same inode as an earlier path: already read
            return member
        fd, st = open_regular(node.parent_fd, node.name, node.st)
        try:
            before = last_before = st  # fstat taken before the current read
            for _ in range(RETRIES):
                sha, size = hash_fd(fd, self._buf, before.st_size)
                after = os.fstat(fd)
                if size == before.st_size and same_content_stat(before, after):
                    break
                last_before, before = before, after
            else:
                # Record the stat from before the last read: one from after it
                # could claim changes the hashed bytes do not hold.
                before = last_before
                self.reporter.counts.unstable += 1
                self.reporter.warning(node.path, "kept changing while read; last read kept")
            found = xattrs.read(fd)
        finally:
            os.close(fd)
        counts = self.reporter.counts
        counts.bytes_hashed += size
        entry = Entry.of(node.path, before, sha256=sha, size=size, xattrs=found)
        self.groups.first(entry, before)
        return entry
