"""Files the user named on the command line: found, written and read with their
errors reported as voltool's (one line, a documented exit code), never as bugs.

An export destination is one of two kinds:

- a file (a regular file, a name that does not exist yet, or a symlink to
  either): the export is written into an unnamed O_TMPFILE in the final
  target's directory, fsynced, and only then linked into place, or renamed
  over the old file. A process killed at any point before that leaves
  nothing behind; the old file, if any, stays whole until the rename. Where
  the filesystem has no O_TMPFILE, a hidden `.NAME.<id>.part` beside the
  target takes its place, which a kill can leave behind;
- a character device or a FIFO: opened and written in place, never replaced.

A symlink stays a symlink: its final target is what is written or replaced.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from voltool.errors import FileError, NoSpace, NotFound, UsageError, VoltoolError
from voltool.ids import new_id

# O_TMPFILE's own refusals, where a filesystem or kernel lacks it (open(2)).
_NO_TMPFILE = frozenset({errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL})
_FLUSH_AT = 1024 * 1024  # bytes an Output gathers before it writes them


def error(e: OSError, name: str, doing: str) -> VoltoolError:
    """`e`, met while `doing` the file `name`, as the voltool error a user sees."""
    why = e.strerror or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return NoSpace(f"cannot {doing} {name}: {why}")
    if e.errno == errno.EPIPE:
        return FileError(f"the reader of {name} closed it before the end")
    return FileError(f"cannot {doing} {name}: {why}")


@dataclass(frozen=True, kw_only=True)
class Destination:
    """Where an export goes, found before anything is written."""

    name: str  # as the user gave it, for messages
    path: Path  # a file: the final target of its symlinks; a device or FIFO: `name`
    through: bool  # a character device or FIFO, written in place

    @property
    def is_file(self) -> bool:
        return not self.through


def destination(name: str) -> Destination:
    """Classify `name`; a directory or block device is refused, a missing directory is not found."""
    if not name:
        raise UsageError("the output file name is empty")
    try:
        st = os.stat(name)
    except FileNotFoundError:
        # Nothing there, or a symlink to nothing: a new file at the link's end.
        real = Path(os.path.realpath(name))
        _require_directory(real.parent)
        return Destination(name=name, path=real, through=False)
    except NotADirectoryError:
        raise NotFound(f"cannot write {name}: a component of its path is not a directory") from None
    except OSError as e:
        raise error(e, name, "reach") from None
    if stat.S_ISREG(st.st_mode):
        return Destination(name=name, path=Path(os.path.realpath(name)), through=False)
    if stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode):
        return Destination(name=name, path=Path(name), through=True)
    what = "a directory" if stat.S_ISDIR(st.st_mode) else _kind(st.st_mode)
    raise UsageError(
        f"{name} is {what}: export writes to a file, a character device or a FIFO"
        + (" (redirect stdout to write to a block device)" if stat.S_ISBLK(st.st_mode) else "")
    )


def _kind(mode: int) -> str:
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a file"


def _require_directory(directory: Path) -> None:
    try:
        st = os.stat(directory)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"directory {directory} does not exist") from None
    except OSError as e:
        raise error(e, str(directory), "reach") from None
    if not stat.S_ISDIR(st.st_mode):
        raise NotFound(f"{directory} is not a directory")


class Output:
    """A write-only file over the descriptor `fd`, named `name` in messages.

    It gathers writes and sends them on in large pieces, and turns a failed
    write into voltool's error (no space: exit 7; EPIPE and the rest: the file
    error). What it holds when a write fails is dropped, never retried on close.
    """

    def __init__(self, fd: int, name: str) -> None:
        self._fd = fd
        self.name = name
        self._pending = bytearray()
        self.written = 0

    def write(self, data: bytes) -> int:
        self._pending += data
        if len(self._pending) >= _FLUSH_AT:
            self.flush()
        return len(data)

    def flush(self) -> None:
        view = memoryview(self._pending)
        try:
            while view:
                try:
                    n = os.write(self._fd, view)
                except OSError as e:
                    raise error(e, self.name, "write") from None
                view = view[n:]
                self.written += n
        finally:
            view.release()
            self._pending.clear()

    def writable(self) -> bool:
        return True


class Input:
    """A read-only file over `file` whose read errors are voltool's file error."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        self._file = file
        self.name = name

    def read(self, n: int = -1) -> bytes:
        try:
            return self._file.read(n)
        except OSError as e:
            raise error(e, self.name, "read") from None

    def readable(self) -> bool:
        return True


@contextlib.contextmanager
def written(dest: Destination) -> Iterator[Output]:
    """An Output whose bytes land at `dest` only if the block ends without an error.

    A device or FIFO is written in place (what was written stays written); a
    file appears, or replaces the old one, whole or not at all (module docstring).
    """
    if dest.through:
        with _opened_in_place(dest) as out:
            yield out
            out.flush()
        return
    with _directory(dest) as dfd, _unnamed(dest, dfd) as (fd, part):
        out = Output(fd, dest.name)
        yield out
        out.flush()
        try:
            os.fsync(fd)
        except OSError as e:
            raise error(e, dest.name, "write") from None
        if part is None:
            _link(fd, dfd, dest)
        else:
            _rename(part, dest.path.name, dfd, dest)
        with contextlib.suppress(OSError):  # the data is safe; only the name's durability waits
            os.fsync(dfd)


@contextlib.contextmanager
def _opened_in_place(dest: Destination) -> Iterator[Output]:
    try:
        # No O_CREAT, no O_TRUNC: a FIFO waits here for its reader.
        fd = os.open(dest.path, os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFound(f"{dest.name} no longer exists") from None
    except OSError as e:
        raise error(e, dest.name, "open") from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)):
            raise FileError(f"{dest.name} changed while it was being opened; nothing was written")
        if os.isatty(fd):
            raise UsageError("refusing to write an archive to a terminal")
        yield Output(fd, dest.name)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _directory(dest: Destination) -> Iterator[int]:
    try:
        dfd = os.open(dest.path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise NotFound(f"directory {dest.path.parent} does not exist") from None
    except OSError as e:
        raise error(e, str(dest.path.parent), "open") from None
    try:
        yield dfd
    finally:
        os.close(dfd)


@contextlib.contextmanager
def _unnamed(dest: Destination, dfd: int) -> Iterator[tuple[int, str | None]]:
    """A new file in `dfd`: unnamed (O_TMPFILE) if the filesystem can, else a hidden part
    file; yields (fd, the part file's name or None). A part file is removed on failure."""
    part: str | None = None
    try:
        fd = os.open(".", os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC, 0o666, dir_fd=dfd)
    except OSError as e:
        if e.errno not in _NO_TMPFILE:
            raise error(e, dest.name, "create") from None
        part = f".{dest.path.name}.{new_id()}.part"
        try:
            fd = os.open(
                part, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666, dir_fd=dfd
            )
        except FileNotFoundError:
            # The directory was there a moment ago: it takes no new files (/proc does this).
            raise FileError(
                f"cannot create {dest.name}: {dest.path.parent} does not accept new files"
            ) from None
        except OSError as e2:
            raise error(e2, dest.name, "create") from None
    try:
        yield fd, part
    except BaseException:
        if part is not None:
            with contextlib.suppress(OSError):
                os.unlink(part, dir_fd=dfd)
        raise
    finally:
        os.close(fd)


def _link(fd: int, dfd: int, dest: Destination) -> None:
    """Give the unnamed file `fd` its name: linked straight there when the name is free,
    else linked under a hidden name and renamed over the old file (the only moment a
    kill can leave something behind, and it is two system calls long)."""
    # A dst_dir_fd makes Python call linkat(2) with AT_SYMLINK_FOLLOW; without one,
    # Python 3.11 and 3.12 call link(2), which links the /proc symlink itself (EXDEV).
    source = f"/proc/self/fd/{fd}"
    try:
        os.link(source, dest.path.name, dst_dir_fd=dfd, follow_symlinks=True)
        return
    except FileExistsError:
        pass
    except OSError as e:
        raise error(e, dest.name, "create") from None
    part = f".{dest.path.name}.{new_id()}.part"
    try:
        os.link(source, part, dst_dir_fd=dfd, follow_symlinks=True)
    except OSError as e:
        raise error(e, dest.name, "create") from None
    _rename(part, dest.path.name, dfd, dest)


def _rename(part: str, name: str, dfd: int, dest: Destination) -> None:
    try:
        os.replace(part, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError as e:
        with contextlib.suppress(OSError):
            os.unlink(part, dir_fd=dfd)
        raise error(e, dest.name, "replace") from None
