"""Copying a tree into a new directory, linking what did not change from the previous copy.

What a copy guarantees:
- DST gets exactly the entries of the manifest the copy writes: types, modes
  (setuid, setgid, sticky), owners, xattrs (ACLs, capabilities), times in ns,
  device numbers, symlink targets as they were (never resolved, wherever they
  point), hard-link groups as the same groups, sparse files as sparse.
- Every file's `sha256` is of the bytes DST holds: for a file of at most
  `SMALL` bytes without holes, of the very buffer that was written into DST
  (one read, one write); for any other, computed by reading the copy back
  after the data went in with copy_file_range (the data never passes through
  the agent then); or carried over from the previous manifest for a file
  linked from the previous tree.
- A file that changes while copied: its data is copied up to the size fstat
  gave when it was opened, then fstat is compared again; if size, mtime or
  ctime moved, the copy is removed and made again, up to `walk.RETRIES` times.
  If it never holds still, the last copy stays (hash and size of what DST
  holds), its entry carries the stat from before that copy (so the next
  incremental copy sees it changed), and it counts as `unstable`.
- Nothing is written through a name that could lead outside DST: every entry
  is created relative to a directory fd of DST with O_CREAT|O_EXCL|O_NOFOLLOW,
  mkdir, mknod, symlink or link, which all fail rather than reuse an existing
  name. Nothing already in DST or in the previous tree is ever opened for writing.
- Metadata is applied owner, then xattrs, then mode, then times: chown clears
  setuid bits and security.capability, and times go last because every other
  change touches them. A directory gets its metadata (and times) after all
  its children are in, so it stays writable (0700) while filled.

Incremental (a previous tree and manifest, on DST's filesystem): a regular
file is hard-linked from the previous tree instead of copied when all of:
- the previous manifest has an entry at the same path, a file that was not a
  later member of a hard-link group (no `link`), with the same inode, dev,
  size, mtime_ns, ctime_ns, mode, uid, gid, nlink and xattrs as the source now;
- its ctime is at least a second before the previous copy started (and so
  before this one): a file changed in the same clock tick as it was read may
  not show a new ctime, so a recent ctime proves nothing ("racily clean");
- it is neither setuid nor setgid and has no security.capability;
- the previous tree's name, hard-linked into DST without following a symlink
  and without ever being opened, is there a regular file on DST's filesystem
  with the size, mode, owner, mtime and xattrs the manifest says (the store is
  not trusted), has room for more links, and is no inode already in DST (a
  store that made two of its files one inode cannot join two source files).
Otherwise the file is copied (and a link that failed the checks is removed).
With `Prev.by_content` (a source no one writes to, such as a snapshot volume
moved into its store), the first condition is instead: the same size, mtime_ns,
mode, uid, gid and xattrs, and the source's content, read and hashed now, has
the previous manifest's sha256; the racy-ctime rule does not apply.

What the checks cannot catch: the previous tree's content is not read, so a
store that rewrote a file's bytes and put back its size and mtime is believed,
and its bytes (with the previous manifest's sha256) go into the new copy. That
is why privileged files are always copied; `verify` of the previous tree
against its manifest finds such a change. A hard-link group of the source is one inode:
its first member is linked or copied by these rules, every later member is
linked to that first member inside DST. So groups come out as the same
groups, and two paths are never joined that were not one inode in the source.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

from . import xattrs
from .entry import Entry, Xattrs, type_of
from .links import InodeFilter, LinkGroups
from .merge import ManifestCursor
from .names import ROOT
from .report import Fatal, Reporter
from .scan import hash_fd, same_content_stat
from .walk import (
    RETRIES,
    Changed,
    Kind,
    Node,
    Vanished,
    open_dir,
    open_regular,
    relook,
    walk,
)

CFR_CHUNK = 64 << 20  # bytes per copy_file_range call: large, the kernel loops inside
RW_CHUNK = 1 << 20  # bytes per read/write when copy_file_range cannot be used
# A file up to this size with no holes goes through the agent's buffer: one read, one
# write, hashed in passing. For many small files that is far fewer system calls than
# copy_file_range, finding the extents, truncating and reading the copy back.
SMALL = RW_CHUNK
# copy_file_range cannot do this pair of files (another filesystem, an old kernel,
# a filesystem without support): read and write instead.
_NO_CFR = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP}
# Out of space or not writable: every later entry would fail as well.
_DST_FATAL = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_PREV_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
RACY_NS = 1_000_000_000  # a ctime this close to a copy's start is not trusted
_CAPS = b"security.capability"
SOCKET_NAME_MAX = 100  # AF_UNIX paths are at most 107 bytes; longer names bind elsewhere


@dataclass(frozen=True)
class Prev:
    """The previous copy: its tree (an fd), its manifest, and when that copy started."""

    tree_fd: int
    manifest: ManifestCursor
    started_ns: int
    # Link by content instead of by identity: for a source that is itself a copy no
    # one writes to (a snapshot volume being moved into its store), whose inodes,
    # ctimes and link counts say nothing about the previous copy's source.
    by_content: bool = False


@dataclass
class _Dir:
    """A directory being filled: its DST fd, the previous tree's fd (-1: none), its entry.

    Only the innermost directory's fds stay open (a tree 10,000 deep must not
    hold 20,000 of them): a parent's are closed when a subdirectory is entered
    and opened again through the subdirectory's ".." when it is left, checked
    to be the same directory (`*_id`: dev and inode)."""

    dst_fd: int  # -1 while a subdirectory is open
    dst_id: tuple[int, int]
    prev_fd: int  # -1: none, or closed while a subdirectory is open if prev_id is set
    prev_id: tuple[int, int] | None  # None: nothing in the previous tree to link from
    entry: Entry | None  # None: its source could not be read; nothing to apply


def _ident(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


class Copier:
    """Copies the tree under `src_fd` into the empty directory `dst_fd`, calling `emit`
    with each entry written, in stream order."""

    def __init__(
        self,
        reporter: Reporter,
        src_fd: int,
        dst_fd: int,
        started_ns: int,
        emit: Callable[[Entry], None],
        prev: Prev | None = None,
        private_root: bool = False,
        groups: LinkGroups | None = None,
    ) -> None:
        self.reporter = reporter
        # DST's root keeps its 0o700 (a restore's staging directory, whose entries are
        # moved out of it): the root's entry is still in the manifest and the digest, and
        # its times are applied, for the swap to give the volume root (touch -r).
        self.private_root = private_root
        self.counts = reporter.counts
        self.src_fd, self.dst_fd = src_fd, dst_fd
        self.started_ns = started_ns
        self.emit = emit
        self.prev = prev
        self.groups = groups if groups is not None else LinkGroups()
        self._dirs: list[_Dir] = []
        self._use_cfr = True
        self._buf = bytearray(RW_CHUNK)
        self._dst_dev = os.fstat(dst_fd).st_dev
        self._made = InodeFilter()  # DST's files, when there is a previous tree
        self._max_links: int | None = None
        self._prev_damaged = False

    def run(self) -> None:
        def vanished() -> None:
            self.counts.vanished += 1

        for kind, node in walk(self.src_fd, self.reporter.error, vanished):
            if kind is Kind.LEAVE:
                self._leave()
                continue
            before = self._before(node.path)
            try:
                if kind is Kind.ENTER:
                    self._enter(node)
                else:
                    self._leaf(node, before)
            except OSError as e:
                if e.errno in _DST_FATAL:
                    raise Fatal(f"destination: {e}") from None
                raise

    def _before(self, path: bytes) -> Entry | None:
        """The previous manifest's entry at `path`, if any. A previous manifest found
        damaged part-way is not read further: the rest of the copy links nothing (what
        was linked was held to lines that read well), so that a damaged snapshot in a
        store (or one no reader takes) never stops every later snapshot of its volume."""
        if self.prev is None or self._prev_damaged:
            return None
        try:
            return self.prev.manifest.take(path)
        except ValueError as e:
            self._prev_damaged = True
            self.reporter.warning(path, f"the previous manifest is damaged ({e}): not linked from")
            return None

    # Directories -----------------------------------------------------------

    def _enter(self, node: Node) -> None:
        try:
            found = xattrs.read(node.fd)
        except OSError as e:
            self.reporter.error(node.path, "listxattr", e)
            found = ()
        entry = Entry.of(node.path, node.st, xattrs=found)
        if not self._dirs:  # the root: DST itself, the previous tree's root
            prev_fd = self.prev.tree_fd if self.prev is not None else -1
            prev_id = _ident(prev_fd) if prev_fd != -1 else None
            self._dirs.append(_Dir(self.dst_fd, _ident(self.dst_fd), prev_fd, prev_id, entry))
        else:
            parent = self._dirs[-1]
            os.mkdir(node.name, 0o700, dir_fd=parent.dst_fd)
            fd, st = open_dir(parent.dst_fd, node.name)
            prev_fd = self._prev_dir(parent.prev_fd, node.name)
            prev_id = _ident(prev_fd) if prev_fd != -1 else None
            # Without its path: one path per level would grow as the depth squared.
            kept = replace(entry, path=ROOT)
            self._dirs.append(_Dir(fd, (st.st_dev, st.st_ino), prev_fd, prev_id, kept))
            if parent.dst_fd != self.dst_fd:
                os.close(parent.dst_fd)
                parent.dst_fd = -1
            if prev_fd != -1 and not self._is_prev_root(parent.prev_fd):
                os.close(parent.prev_fd)  # opened again through prev_fd's ".."
                parent.prev_fd = -1
        self.emit(entry)

    def _is_prev_root(self, fd: int) -> bool:
        return self.prev is not None and fd == self.prev.tree_fd

    def _prev_dir(self, prev_parent: int, name: bytes) -> int:
        if prev_parent == -1:
            return -1
        try:
            return open_dir(prev_parent, name)[0]
        except (OSError, Vanished, Changed):
            return -1  # not there, or not a directory: nothing to link from

    def _leave(self) -> None:
        d = self._dirs.pop()
        if d.entry is not None and not (self.private_root and d.dst_fd == self.dst_fd):
            _apply_fd(d.dst_fd, d.entry)
        elif d.entry is not None:
            os.utime(d.dst_fd, ns=(d.entry.atime_ns, d.entry.mtime_ns))
        if self._dirs:
            self._reopen(self._dirs[-1], d)
        if d.dst_fd != self.dst_fd:
            os.close(d.dst_fd)
        if d.prev_fd != -1 and not self._is_prev_root(d.prev_fd):
            os.close(d.prev_fd)

    @staticmethod
    def _reopen(parent: _Dir, child: _Dir) -> None:
        """Open again the fds of `parent` closed while `child` was filled."""
        if parent.dst_fd == -1:
            fd = os.open(b"..", _DIR, dir_fd=child.dst_fd)
            if _ident(fd) != parent.dst_id:
                os.close(fd)
                raise Fatal("destination: a directory was moved while it was filled")
            parent.dst_fd = fd
        if parent.prev_fd == -1 and parent.prev_id is not None:
            fd = os.open(b"..", _DIR, dir_fd=child.prev_fd)
            if _ident(fd) != parent.prev_id:  # moved: link nothing more from it
                os.close(fd)
                parent.prev_id = None
            else:
                parent.prev_fd = fd

    # Everything else -------------------------------------------------------

    def _leaf(self, node: Node, before: Entry | None) -> None:
        try:
            for _ in range(RETRIES):
                try:
                    entry = self._make(node, before)
                except Changed:
                    node = relook(node)
                    if stat.S_ISDIR(node.st.st_mode):  # was no directory when listed
                        self.reporter.warning(node.path, "became a directory while copied")
                        raise Vanished from None
                    continue
                self.emit(entry)
                return
            self.reporter.error(node.path, "open", "kept changing while copied")
        except Vanished:
            self.counts.vanished += 1
        except OSError as e:
            if e.errno in _DST_FATAL:
                raise
            self.reporter.error(node.path, "copy", e)

    def _make(self, node: Node, before: Entry | None) -> Entry:
        """Make `node` in DST and return its entry; Changed if the source is not what
        node.st says. The source is read completely before anything is created."""
        kind = type_of(node.st)
        if kind == "file":
            return self._file(node, before)
        dst = self._dirs[-1].dst_fd
        target = None
        if kind == "symlink":
            target = _readlink(node)
        try:
            found = xattrs.read(node.name, node.parent_fd)
        except FileNotFoundError:
            raise Vanished from None
        entry = Entry.of(node.path, node.st, target=target, xattrs=found)
        if target is not None:
            os.symlink(target, node.name, dir_fd=dst)
        elif kind == "fifo":
            os.mkfifo(node.name, 0o600, dir_fd=dst)
        elif kind in ("char", "block"):
            os.mknod(node.name, 0o600 | stat.S_IFMT(node.st.st_mode), node.st.st_rdev, dir_fd=dst)
        elif kind == "socket":
            _make_socket(dst, node.name)
        else:
            raise OSError(errno.EINVAL, f"cannot copy an entry of type {kind}")
        try:
            _apply_at(dst, node.name, entry)
        except BaseException:
            os.unlink(node.name, dir_fd=dst)  # DST holds only what the manifest lists
            raise
        return entry

    def _file(self, node: Node, before: Entry | None) -> Entry:
        dst = self._dirs[-1].dst_fd
        member = self.groups.member(node.path, node.st)
        if member is not None:
            assert member.link is not None
            # The same source inode as an earlier path, already in DST: link to it.
            _link_in_dst(self.dst_fd, member.link, dst, node.name)
            return member
        entry = None
        if self._may_link(before):
            try:
                found = xattrs.read(node.name, node.parent_fd)
            except FileNotFoundError:
                raise Vanished from None
            entry = self._link_prev(node, before, found)
        if entry is None:
            entry = self._copy_file(node)
            self.reporter.hold_for_tests("agent-copied-a-file")
        self.groups.first(entry, node.st)
        return entry

    def _may_link(self, before: Entry | None) -> bool:
        """Whether the previous tree has a file at this path that could be linked from."""
        return (
            before is not None
            and self.prev is not None
            and self._dirs[-1].prev_fd != -1
            and before.type == "file"
            and before.link is None
            and before.sha256 is not None
        )

    def _link_prev(self, node: Node, before: Entry | None, found: Xattrs) -> Entry | None:
        """The entry of `node` hard-linked from the previous tree, or None if it may not be."""
        st = node.st
        prev_dir = self._dirs[-1].prev_fd
        if before is None or self.prev is None or not self._may_link(before):
            return None
        if self.prev.by_content:
            if not self._same_content(node, before, found):
                return None
        elif not self._unchanged(st, before, found):
            return None
        if not self._link_from(prev_dir, node, before, found):
            return None
        self.counts.files_linked += 1
        self.counts.bytes_linked += st.st_size
        return Entry.of(node.path, st, sha256=before.sha256, xattrs=found)

    def _unchanged(self, st: os.stat_result, before: Entry, found: Xattrs) -> bool:
        """Whether the source file is, by its identity and stat, the one `before` was."""
        assert self.prev is not None
        now = (
            st.st_ino,
            st.st_dev,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            stat.S_IMODE(st.st_mode),
            st.st_uid,
            st.st_gid,
            st.st_nlink,
            found,
        )
        then = (
            before.ino,
            before.dev,
            before.size,
            before.mtime_ns,
            before.ctime_ns,
            before.mode,
            before.uid,
            before.gid,
            before.nlink,
            before.xattrs,
        )
        if now != then:
            return False
        horizon = min(self.started_ns, self.prev.started_ns) - RACY_NS
        # racily clean: unchanged by the numbers, not necessarily by content
        return st.st_ctime_ns < horizon

    def _same_content(self, node: Node, before: Entry, found: Xattrs) -> bool:
        """Whether the source file has `before`'s size, mtime, mode, owner, xattrs and
        content (read and hashed now, and still the same file when hashed)."""
        st = node.st
        now = (st.st_size, st.st_mtime_ns, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, found)
        then = (before.size, before.mtime_ns, before.mode, before.uid, before.gid, before.xattrs)
        if now != then:
            return False
        sfd, opened = open_regular(node.parent_fd, node.name, st)
        try:
            # Up to one byte past the size it had: a file made huge meanwhile is not read
            # to its end, it is just not the same.
            sha, size = hash_fd(sfd, self._buf, st.st_size + 1)
            self.counts.bytes_hashed += size
            after = os.fstat(sfd)
        finally:
            os.close(sfd)
        return (
            same_content_stat(st, opened)
            and same_content_stat(opened, after)
            and (sha, size) == (before.sha256, before.size)
        )

    def _link_from(self, prev_dir: int, node: Node, before: Entry, found: Xattrs) -> bool:
        """Link the previous tree's `node.name` into DST if it is what `before` says.

        Nothing in the previous tree is opened (a FIFO or device put there must not
        be): its name is linked (linkat, never following a symlink) and the inode
        that landed in DST is checked; what fails the checks is unlinked again.
        """
        if before.mode & (stat.S_ISUID | stat.S_ISGID) or any(k == _CAPS for k, _ in found):
            return False  # content that grants privileges is never taken on trust
        dst = self._dirs[-1].dst_fd
        try:
            os.link(
                node.name, node.name, src_dir_fd=prev_dir, dst_dir_fd=dst, follow_symlinks=False
            )
        except OSError as e:
            if e.errno in _DST_FATAL:
                raise
            return False  # gone, a directory, another filesystem, too many links: copy
        try:
            ok = self._linked_ok(dst, node, before, found)
        except BaseException:
            os.unlink(node.name, dir_fd=dst)
            raise
        if not ok:
            os.unlink(node.name, dir_fd=dst)
        return ok

    def _linked_ok(self, dst: int, node: Node, before: Entry, found: Xattrs) -> bool:
        """Whether the inode just linked at `node.name` in DST is what `before` says."""
        made = os.stat(node.name, dir_fd=dst, follow_symlinks=False)
        wanted = (before.size, before.mode, before.uid, before.gid, before.mtime_ns)
        found_st = (made.st_size, stat.S_IMODE(made.st_mode), made.st_uid, made.st_gid)
        if (
            not stat.S_ISREG(made.st_mode)
            or made.st_dev != self._dst_dev
            # the source's own inode (a store file linked to it from outside): the next
            # write to the source would change this snapshot too
            or (made.st_dev, made.st_ino) == (node.st.st_dev, node.st.st_ino)
            or (*found_st, made.st_mtime_ns) != wanted
            # room for the group's later members, linked to this one
            or made.st_nlink - 1 + node.st.st_nlink > self._link_max(dst)
            or xattrs.read(node.name, dst) != found
        ):
            return False
        # One inode of the previous tree stands for one source inode: a store that
        # made two of its files one inode must not join their sources in DST.
        return self._made.add(made.st_ino)

    def _link_max(self, dst: int) -> int:
        """The most links an inode of DST may have (one filesystem: asked once)."""
        if self._max_links is None:
            self._max_links = os.fpathconf(dst, "PC_LINK_MAX")
        return self._max_links

    def _copy_file(self, node: Node) -> Entry:
        dst = self._dirs[-1].dst_fd
        sfd, before = open_regular(node.parent_fd, node.name, node.st)
        try:
            found = xattrs.read(sfd)
            for attempt in range(RETRIES):
                dfd = os.open(node.name, _NEW_FILE, 0o600, dir_fd=dst)
                try:
                    if self.prev is not None:  # a store linking it in later is refused
                        self._made.add(os.fstat(dfd).st_ino)
                    hashed = self._copy_data(sfd, dfd, before.st_size)
                    after = os.fstat(sfd)
                    last = attempt == RETRIES - 1
                    if same_content_stat(before, after) or last:
                        if not same_content_stat(before, after):
                            self.counts.unstable += 1
                            self.reporter.warning(node.path, "kept changing; last copy kept")
                        sha, size = hashed if hashed is not None else hash_fd(dfd, self._buf)
                        self.counts.bytes_hashed += size
                        entry = Entry.of(node.path, before, sha256=sha, size=size, xattrs=found)
                        _apply_fd(dfd, entry)
                        return entry
                except BaseException:
                    os.unlink(node.name, dir_fd=dst)
                    raise
                finally:
                    os.close(dfd)
                os.unlink(node.name, dir_fd=dst)  # changed while copied: copy again
                before = after
            raise AssertionError("unreachable: the last attempt returns")
        finally:
            os.close(sfd)

    def _copy_data(self, src: int, dst: int, size: int) -> tuple[str, int] | None:
        """Copy the data extents of `src` below `size` into `dst` at the same offsets, then
        make `dst` exactly `size` long: holes stay holes.

        Returns the SHA-256 and length of what `dst` then holds when the bytes went
        through the agent's buffer (a small file without holes), None when they did not
        (the caller reads `dst` back)."""
        if size <= SMALL and _dense(src, size):
            return self._copy_small(src, dst, size)
        for start, end in _extents(src, size):
            offset = start
            while offset < end:
                n = self._copy_range(src, dst, offset, end - offset)
                if n == 0:
                    self._truncate(dst, size)  # EOF early: the file shrank
                    return None
                offset += n
                self.counts.bytes_copied += n
        self._truncate(dst, size)
        return None

    def _copy_small(self, src: int, dst: int, size: int) -> tuple[str, int]:
        """Read `src`'s first `size` bytes into the buffer, write them into the empty `dst`,
        and hash that very buffer. A file that shrank meanwhile is made `size` long, as
        the extent copy makes it (zeros at the end): the caller sees the change by fstat."""
        view = memoryview(self._buf)
        got = 0
        while got < size:
            n = os.preadv(src, [view[got:size]], got)
            if n == 0:
                break
            got += n
        done = 0
        while done < got:
            done += os.pwrite(dst, view[done:got], done)
        self.counts.bytes_copied += got
        h = hashlib.sha256(view[:got])
        if got < size:
            os.ftruncate(dst, size)
            h.update(bytes(size - got))
        return h.hexdigest(), size

    @staticmethod
    def _truncate(dst: int, size: int) -> None:
        os.ftruncate(dst, size)

    def _copy_range(self, src: int, dst: int, offset: int, count: int) -> int:
        if self._use_cfr:
            try:
                return os.copy_file_range(src, dst, min(count, CFR_CHUNK), offset, offset)
            except OSError as e:
                if e.errno not in _NO_CFR:
                    raise
                self._use_cfr = False  # for the rest of the run: it will not start working
        n = os.preadv(src, [memoryview(self._buf)[: min(count, RW_CHUNK)]], offset)
        view = memoryview(self._buf)[:n]
        done = 0
        while done < n:
            done += os.pwrite(dst, view[done:], offset + done)
        return n


def _dense(fd: int, size: int) -> bool:
    """Whether `fd` has no hole below `size` (SEEK_HOLE finds the first one; where it is
    not supported, a file is one extent)."""
    if size == 0:
        return True
    try:
        return os.lseek(fd, 0, os.SEEK_HOLE) >= size
    except OSError:
        return True


def _extents(fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The data extents [start, end) of `fd` below `size`, by SEEK_DATA and SEEK_HOLE.
    Without their support, one extent: the whole file."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                return  # only a hole from pos to EOF
            yield pos, size
            return
        if start >= size:
            return
        try:
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        except OSError:
            end = size
        yield start, end
        pos = end


def _link_in_dst(root_fd: int, path: bytes, dir_fd: int, name: bytes) -> None:
    """Hard-link DST's `path` (relative to `root_fd`) as `name` in `dir_fd`.

    The path is followed one directory at a time (O_NOFOLLOW): it may be longer
    than PATH_MAX, and no symlink on the way is followed."""
    *parents, last = path.split(b"/")
    fd = root_fd
    try:
        for part in parents:
            sub = os.open(part, _DIR, dir_fd=fd)
            if fd != root_fd:
                os.close(fd)
            fd = sub
        os.link(last, name, src_dir_fd=fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        if fd != root_fd:
            os.close(fd)


def _readlink(node: Node) -> bytes:
    try:
        return os.readlink(node.name, dir_fd=node.parent_fd)
    except FileNotFoundError:
        raise Vanished from None
    except OSError as e:
        if e.errno == errno.EINVAL:  # no symlink any more
            raise Changed from None
        raise


def _make_socket(dir_fd: int, name: bytes) -> None:
    """A socket inode at `name`: bind an AF_UNIX socket there, then close it.

    bind takes a path of at most 107 bytes, so it is given the bare name
    relative to the directory (fchdir); a longer name is bound as a short
    temporary name and hard-linked to its own (link, unlike rename, never
    replaces an existing name).
    """
    os.fchdir(dir_fd)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        if len(name) <= SOCKET_NAME_MAX:
            s.bind(name)
            return
        temp = b".voltool-agent-socket-%d" % os.getpid()
        s.bind(temp)
    try:
        os.link(temp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.unlink(temp, dir_fd=dir_fd)


def _apply_fd(fd: int, entry: Entry) -> None:
    """Owner, xattrs, mode, times of an open file or directory, in that order."""
    os.fchown(fd, entry.uid, entry.gid)
    xattrs.write(fd, entry.xattrs)
    os.fchmod(fd, entry.mode)
    os.utime(fd, ns=(entry.atime_ns, entry.mtime_ns))


def _apply_at(dir_fd: int, name: bytes, entry: Entry) -> None:
    """Owner, xattrs, mode, times of `name` in `dir_fd`, never through a symlink.

    A symlink's own mode cannot be set on Linux (and is always 0o777)."""
    os.chown(name, entry.uid, entry.gid, dir_fd=dir_fd, follow_symlinks=False)
    xattrs.write(name, entry.xattrs, dir_fd)
    if entry.type != "symlink":
        # Just made by the agent; but a writer racing in DST (a restore's staging
        # directory) could put a symlink in its place, and chmod follows symlinks:
        # change the mode of the very inode found, through an O_PATH fd.
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
        try:
            if stat.S_ISLNK(os.fstat(fd).st_mode):
                raise OSError(errno.ELOOP, "replaced by a symlink", os.fsdecode(name))
            os.chmod(f"/proc/self/fd/{fd}", entry.mode)
        finally:
            os.close(fd)
    os.utime(name, ns=(entry.atime_ns, entry.mtime_ns), dir_fd=dir_fd, follow_symlinks=False)
