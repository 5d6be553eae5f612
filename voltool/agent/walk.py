"""Walking a tree by directory file descriptors, never following a symlink.

Guarantees:
- Order: depth-first preorder, each directory's children sorted by their name
  bytes; that is ascending `names.order_key` of the paths. A directory's ENTER
  comes before its subtree and its LEAVE after it.
- Every lookup is relative to an open directory fd (dir_fd=, O_NOFOLLOW, lstat):
  a symlink is never followed, and a directory swapped for a symlink while the
  walk runs is not entered (its open fails, and it is looked at again).
- Memory: one sorted list of names, and one fd, per directory on the path from
  the root to the current entry, and that path once (not each directory's: a
  tree nested 10,000 deep would cost memory quadratic in its depth); nothing
  per entry already visited.
- The source may change under the walk. An entry that vanishes is skipped and
  counted (`Counts.vanished`). A directory that cannot be opened or listed is
  reported as an error: left out with its subtree, or listed empty.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import Enum

from .names import ROOT, join

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO put in a file's place must not block the open;
# O_NOCTTY: nor may a terminal become ours; O_NOATIME: reading must not touch
# the source's atime (needs ownership or CAP_FOWNER: dropped on EPERM).
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY
_NOATIME = getattr(os, "O_NOATIME", 0)
RETRIES = 3  # how often an entry that keeps changing type is looked at again


class Kind(Enum):
    ENTER = "enter"  # a directory, before its children
    LEAF = "leaf"  # anything that is not a directory
    LEAVE = "leave"  # a directory, after its children


@dataclass(frozen=True, slots=True)
class Node:
    """An entry met by the walk. `st` is its lstat (for a directory: fstat of `fd`)."""

    path: bytes
    name: bytes  # ROOT for the root
    parent_fd: int  # -1 for the root
    st: os.stat_result
    fd: int = -1  # directories: open on the directory, until just after its LEAVE


class Vanished(Exception):
    """The entry is gone."""


class Changed(Exception):
    """The entry is no longer what its lstat said (another type or inode)."""


def lstat_at(dir_fd: int, name: bytes) -> os.stat_result:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise Vanished from None


def open_dir(dir_fd: int, name: bytes) -> tuple[int, os.stat_result]:
    """Open the directory `name` in `dir_fd` and fstat it; never through a symlink."""
    try:
        fd = _open_noatime(name, dir_fd, _DIR_FLAGS)
    except FileNotFoundError:
        raise Vanished from None
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise Changed from None
        raise
    return fd, os.fstat(fd)


def open_regular(dir_fd: int, name: bytes, st: os.stat_result) -> tuple[int, os.stat_result]:
    """Open for reading the regular file that lstat saw as `st`; return the fd and its fstat.

    Raises Changed if what opened is not that file (a symlink, since
    O_NOFOLLOW refuses it; a FIFO, device or directory; another inode): the
    caller looks at the entry again, and never reads through what replaced it.
    Opening a device in a file's place is harmless in the helper container,
    whose device cgroup lets it open only the null, zero, random and tty kind.
    """
    try:
        fd = _open_noatime(name, dir_fd)
    except FileNotFoundError:
        raise Vanished from None
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.ENODEV):
            raise Changed from None
        raise
    fst = os.fstat(fd)
    if not stat.S_ISREG(fst.st_mode) or (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev):
        os.close(fd)
        raise Changed
    return fd, fst


def _open_noatime(name: bytes, dir_fd: int | None, flags: int = _FILE_FLAGS) -> int:
    """Open with O_NOATIME where allowed: reading (or listing) must not change the
    source's atimes, which the manifest records."""
    global _NOATIME
    if _NOATIME:
        try:
            return os.open(name, flags | _NOATIME, dir_fd=dir_fd)
        except PermissionError:
            _NOATIME = 0  # not the owner and no CAP_FOWNER: read without it
    return os.open(name, flags, dir_fd=dir_fd)


def open_root(path: str) -> int:
    """Open the directory a command works on, as the walk opens every other one.

    The path's parent is the caller's, so trusted to be where it says (it may pass
    through symlinks the caller chose); its last component is not: it may be a
    directory inside a volume that others write (a restore's old data), which a
    symlink put in its place must not redirect anywhere, so it is never followed."""
    raw = os.fsencode(path).rstrip(b"/")
    parent, name = os.path.split(raw)
    if not name or name in (b".", b".."):
        return _open_noatime(os.fsencode(path), None, _DIR_FLAGS & ~os.O_NOFOLLOW)
    parent_fd = _open_noatime(parent or b".", None, _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        return _open_noatime(name, parent_fd, _DIR_FLAGS)
    finally:
        os.close(parent_fd)


def relook(node: Node) -> Node:
    """`node` with a fresh lstat (raises Vanished)."""
    return replace(node, st=lstat_at(node.parent_fd, node.name))


OnError = Callable[[bytes, str, OSError], None]


def walk(
    root_fd: int, on_error: OnError, on_vanished: Callable[[], None]
) -> Iterator[tuple[Kind, Node]]:
    """The tree under `root_fd`, in order. Directory fds are closed after their LEAVE
    (the root's is the caller's, and stays open)."""
    root = Node(ROOT, ROOT, -1, os.fstat(root_fd), root_fd)
    yield Kind.ENTER, root
    # Each open directory, kept without its path, and where its path ends in `here`,
    # the innermost one's path: every directory's parent's is a prefix of its own.
    stack = [(root, iter(_names(root, on_error)), 0)]
    here = ROOT
    try:
        while stack:
            parent, names, _ = stack[-1]
            name = next(names, None)
            if name is None:
                stack.pop()
                yield Kind.LEAVE, replace(parent, path=here)
                if parent.fd != root_fd:
                    os.close(parent.fd)
                here = here[: stack[-1][2]] if len(stack) > 1 else ROOT
                continue
            node = _look(parent, here, name, on_error, on_vanished)
            if node is None:
                continue
            if node.fd == -1:
                yield Kind.LEAF, node
                continue
            yield Kind.ENTER, node
            stack.append((replace(node, path=ROOT), iter(_names(node, on_error)), len(node.path)))
            here = node.path
    finally:  # the consumer stopped early: close what is still open
        for parent, _, _ in stack:
            if parent.fd != root_fd:
                os.close(parent.fd)


def _names(directory: Node, on_error: OnError) -> list[bytes]:
    """The directory's names, sorted by bytes (os.listdir on an fd gives str; fsencode
    turns each back into its exact bytes, surrogate escapes included)."""
    try:
        names = [os.fsencode(n) for n in os.listdir(directory.fd)]
    except OSError as e:
        on_error(directory.path, "listdir", e)
        return []
    names.sort()
    return names


def _look(
    parent: Node, parent_path: bytes, name: bytes, on_error: OnError, vanished: Callable[[], None]
) -> Node | None:
    """The node for `name` in `parent` (at `parent_path`), a directory opened; None if it
    vanished or failed (reported)."""
    path = join(parent_path, name)
    try:
        for _ in range(RETRIES):
            st = lstat_at(parent.fd, name)
            if not stat.S_ISDIR(st.st_mode):
                return Node(path, name, parent.fd, st)
            try:
                fd, st = open_dir(parent.fd, name)
            except Changed:
                continue  # swapped for something else since the lstat: look again
            return Node(path, name, parent.fd, st, fd)
        on_error(path, "lstat", OSError(errno.EAGAIN, "kept changing type"))
    except Vanished:
        vanished()
    except OSError as e:
        on_error(path, "open", e)
    return None
