"""Putting back, from a manifest, what a restic restore leaves out: sockets and holes.

restic (0.14 and later) records a socket but restores nothing for it, and
restores every file dense. A pulled snapshot is held to its manifest by its
tree digest, which a missing socket changes; a sparse file restored dense costs
its whole size on disk. `mend TREE MANIFEST`, run on the restored tree before it
is copied into the store:

- makes each socket the manifest lists that the tree lacks, with the owner,
  xattrs, mode and times the manifest gives it;
- punches holes where a file the manifest lists as sparse (allocated less than
  its size) has whole blocks of zeros (its content is unchanged);
- then gives every entry whose mtime differs the manifest's times: those of the
  directories it made sockets in and of the files it punched, and any restic
  could not set (it cannot represent a time past the year 2262).

Nothing else is changed: any other difference is for the digest to find. The
manifest comes from the repository, so it is data, not orders: every path is
followed one directory at a time and never through a symlink, and only what is
missing is made. It runs in a helper that mounts nothing but the restored tree.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterable, Iterator

from .copy import _apply_at, _make_socket
from .entry import Entry
from .names import ROOT
from .report import Fatal, Reporter

_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def mend(reporter: Reporter, root_fd: int, lines: Callable[[], Iterable[bytes]]) -> None:
    """Mend the tree at `root_fd` from the manifest `lines()` gives (read twice: the
    times go last, once sockets and holes have moved them)."""
    for raw in lines():
        entry = _parse(raw)
        if entry.type == "socket":
            _make_missing_socket(reporter, root_fd, entry)
        elif entry.type == "file" and entry.link is None and entry.alloc < entry.size:
            _punch(reporter, root_fd, entry)
    parents = _Parents(root_fd)
    try:
        for raw in lines():
            entry = _parse(raw)
            try:
                _set_times(parents, entry)
            except OSError as e:
                reporter.error(entry.path, "times", e)
    finally:
        parents.close()


def _set_times(parents: _Parents, entry: Entry) -> None:
    """Give `entry` the manifest's times where its mtime differs (restic cannot set a time
    past 2262, nor can it leave a directory's as it was once something is made in it)."""
    if entry.path == ROOT:
        st = os.fstat(parents.root)
        if st.st_mtime_ns != entry.mtime_ns:
            os.utime(parents.root, ns=(entry.atime_ns, entry.mtime_ns))
        return
    parent, _, name = entry.path.rpartition(b"/")
    dir_fd = parents.get(parent or ROOT)
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return  # missing: the digest says so
    if st.st_mtime_ns != entry.mtime_ns:
        os.utime(name, ns=(entry.atime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)


class _Parents:
    """The directory of the entry at hand, opened as `_opened_dir` does, kept open while the
    manifest's next entries are in it too."""

    def __init__(self, root_fd: int) -> None:
        self.root = root_fd
        self._path: bytes | None = None
        self._fd = -1

    def get(self, path: bytes) -> int:
        if path == ROOT:
            return self.root
        if path != self._path:
            self.close()
            with _opened_dir(self.root, path) as fd:
                self._fd = os.dup(fd)
            self._path = path
        return self._fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd, self._path = -1, None


def _parse(raw: bytes) -> Entry:
    try:
        return Entry.parse(raw)
    except ValueError as e:
        raise Fatal(f"manifest: {e}") from None


def _parent(path: bytes) -> bytes:
    head, sep, _ = path.rpartition(b"/")
    return head if sep else ROOT


def _make_missing_socket(reporter: Reporter, root_fd: int, entry: Entry) -> None:
    """Make `entry`'s socket if nothing is at its path."""
    name = entry.path.rpartition(b"/")[2]
    try:
        with _opened_dir(root_fd, _parent(entry.path)) as dir_fd:
            try:
                os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                return  # something is there: the digest says whether it is right
            except FileNotFoundError:
                pass
            _make_socket(dir_fd, name)
            _apply_at(dir_fd, name, entry)
            reporter.counts.entries += 1
    except OSError as e:
        reporter.error(entry.path, "socket", e)


def _punch(reporter: Reporter, root_fd: int, entry: Entry) -> None:
    """Punch holes in the whole zero blocks of `entry`'s file, then set its times back."""
    parent, _, name = entry.path.rpartition(b"/")
    try:
        with _opened_dir(root_fd, parent or ROOT) as dir_fd:
            fd = os.open(name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size != entry.size:
                return  # not what the manifest says: the digest will tell
            block = max(st.st_blksize, 512)
            for start, length in _zero_runs(fd, st.st_size, block):
                _fallocate_punch(fd, start, length)
            os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
            return  # a filesystem without holes: the file stays dense, its content right
        reporter.error(entry.path, "holes", e)


def _zero_runs(fd: int, size: int, block: int) -> Iterator[tuple[int, int]]:
    """(start, length) of each run of whole `block`-sized blocks of zeros below `size`."""
    zero = bytes(block)
    run_start = None
    offset = 0
    while offset < size:
        data = os.pread(fd, _CHUNK, offset)
        if not data:
            break
        view = memoryview(data)
        for i in range(0, len(data) - len(data) % block, block):
            if view[i : i + block] == zero:
                if run_start is None:
                    run_start = offset + i
            elif run_start is not None:
                yield run_start, offset + i - run_start
                run_start = None
        offset += len(data) - len(data) % block
        if len(data) % block:
            break  # the last, partial block stays as it is
    if run_start is not None:
        yield run_start, offset - run_start


def _fallocate_punch(fd: int, start: int, length: int) -> None:
    """fallocate(2) with PUNCH_HOLE | KEEP_SIZE: not in the os module, so through ctypes."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
    mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
    if libc.fallocate(fd, mode, start, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class _opened_dir:
    """The directory at `path` below `root_fd`, opened one component at a time, never
    through a symlink; closed when the block ends."""

    def __init__(self, root_fd: int, path: bytes) -> None:
        self._root = root_fd
        self._path = path
        self._fd = -1

    def __enter__(self) -> int:
        fd = os.dup(self._root)
        try:
            if self._path != ROOT:
                for part in self._path.split(b"/"):
                    sub = os.open(part, _DIR, dir_fd=fd)
                    os.close(fd)
                    fd = sub
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return fd

    def __exit__(self, *exc: object) -> None:
        os.close(self._fd)
