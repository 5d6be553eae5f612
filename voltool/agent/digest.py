"""The tree digest: one SHA-256 that two trees share exactly when their content does.

Definition (version 2). The digest is the lower-case hex SHA-256 of

    b"voltool tree digest 2\\n"

followed by, for each entry of the manifest stream in stream order (ascending
`names.order_key` of the path), `Entry.digest_line()`: the canonical JSON (sorted
keys, no spaces, ASCII) of these fields only, and b"\\n":

    path, type, mode, uid, gid      every entry
    size, sha256                    files
    link                            files that are hard links to an earlier entry
    target                          symlinks
    rdev                            char and block devices
    xattrs                          entries that have any

Times (mtime, atime, ctime), inode, device and link counts, and allocated
size are left out: a faithful copy on another filesystem, or made at another
time, has the same digest; a changed byte, mode, owner, target, xattr, device
number or hard-link group changes it. Because the order is fixed by the
paths, the digest is a function of the tree, not of how it was walked.
"""

from __future__ import annotations

import hashlib

from .entry import Entry

HEADER = b"voltool tree digest 2\n"


class TreeDigest:
    """Accumulates the digest of entries fed in stream order."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(HEADER)

    def add(self, entry: Entry) -> None:
        self._hash.update(entry.digest_line())

    def add_line(self, digest_line: bytes) -> None:
        """Add an entry by its `Entry.digest_line()`, made already."""
        self._hash.update(digest_line)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()
