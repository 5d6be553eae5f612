"""The agent's command line: parse, run one command, turn every failure into an exit code."""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import resource
import stat
import sys
import time
import zlib
from collections.abc import Iterator
from typing import IO, NoReturn, cast

from . import __version__
from .copy import Copier, Prev
from .digest import TreeDigest
from .entry import Entry
from .links import LinkGroups, expected_groups
from .mend import mend
from .merge import ManifestCursor
from .names import ROOT, shown
from .report import EXIT_ENTRIES, EXIT_FATAL, EXIT_OK, EXIT_USAGE, Fatal, Reporter
from .scan import Scanner
from .verify import verify
from .walk import Kind, open_root, walk

# The longest manifest line written or read: a path of 4 KiB and xattrs of 64 KiB each
# fit many times over; an entry whose line is longer is an error (see _fits).
MAX_LINE = 8 << 20
GZIP_LEVEL = 3  # a manifest compresses to about a quarter at level 3, for little CPU
_GZIP_MAGIC = b"\x1f\x8b"  # a manifest line starts with "{": the two never mix up
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class Usage(Exception):
    """The command line is wrong."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise Usage(message)  # a JSON line, not argparse's text on stderr


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="agent", add_help=False)
    sub = p.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan", add_help=False)
    scan.add_argument("root")
    copy = sub.add_parser("copy", add_help=False)
    copy.add_argument("src")
    copy.add_argument("dst")
    copy.add_argument("--prev", nargs=2, metavar=("TREE", "MANIFEST"))
    copy.add_argument("--prev-started", type=int, metavar="NS")
    copy.add_argument("--prev-by-content", action="store_true")
    copy.add_argument("--no-sync", action="store_true")
    copy.add_argument("--private-root", action="store_true")
    copy.add_argument("--gzip", action="store_true")
    # SRC is a stored tree, MANIFEST its manifest: its hard-link groups are the manifest's.
    copy.add_argument("--groups", metavar="MANIFEST")
    # DST is where others can write while it is made (a restore's staging directory):
    # read it back once made and hold it to what was written (see _check_sealed).
    copy.add_argument("--seal", action="store_true")
    verify = sub.add_parser("verify", add_help=False)
    verify.add_argument("tree")
    verify.add_argument("manifest")
    # TREE is a stored tree: its hard-link groups are MANIFEST's (see links.py).
    verify.add_argument("--stored", action="store_true")
    settled = sub.add_parser("settled", add_help=False)
    settled.add_argument("tree")
    settled.add_argument("since", type=int, metavar="NS")
    # What the copy said of itself: its root's identity, and its seal (copy --seal).
    settled.add_argument("--root", metavar="DEV:INO")
    settled.add_argument("--seal", metavar="HEX")
    # TREE is what restic restored of a pulled snapshot, MANIFEST its manifest (mend.py).
    mend_cmd = sub.add_parser("mend", add_help=False)
    mend_cmd.add_argument("tree")
    mend_cmd.add_argument("manifest")
    return p


def selftest() -> dict[str, object]:
    """What the agent image's check reads: this interpreter, and whose SHA-256 it has."""
    h = hashlib.sha256()
    return {
        "agent": __version__,
        "python": sys.version,
        "prefix": sys.prefix,
        # OpenSSL's SHA-256 is `_hashlib.HASH`; the built-in fallback (`_sha256` or
        # `_sha2`) is several times slower.
        "sha256": f"{type(h).__module__}.{type(h).__name__}",
        "openssl": type(h).__module__ == "_hashlib",
    }


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--version"]:
        print(__version__)
        return EXIT_OK
    if argv == ["selftest"]:
        print(json.dumps(selftest(), sort_keys=True))
        return EXIT_OK
    reporter = Reporter()
    try:
        args = _parser().parse_args(argv)
        if args.command == "copy" and (args.prev is None) != (args.prev_started is None):
            raise Usage("--prev and --prev-started go together")
        if args.command == "copy" and args.prev_by_content and args.prev is None:
            raise Usage("--prev-by-content goes with --prev")
        if args.command == "verify" and args.stored and args.manifest == "-":
            raise Usage("--stored reads the manifest twice: not from stdin")
    except Usage as e:
        reporter.fatal(f"usage: {e}")
        return EXIT_USAGE
    out = sys.stdout.buffer
    try:
        _more_fds()
        if args.command == "scan":
            _scan(reporter, args.root, out)
        elif args.command == "copy":
            _copy(reporter, args, out)
        elif args.command == "settled":
            _settled(reporter, args.tree, args.since, args.root, args.seal)
        elif args.command == "mend":
            _mend(reporter, args.tree, args.manifest)
        else:
            _verify(reporter, args.tree, args.manifest, out, args.stored)
        out.flush()
    except Fatal as e:
        reporter.fatal(str(e))
        return _fatal_exit()
    except OSError as e:
        reporter.fatal(f"{type(e).__name__}: {e}")
        return _fatal_exit()
    except BaseException as e:  # never a traceback: the caller reads JSON lines only
        reporter.fatal(f"internal error: {type(e).__name__}: {e}")
        return _fatal_exit()
    counts = reporter.counts
    return EXIT_ENTRIES if counts.errors or counts.mismatches else EXIT_OK


def _fatal_exit() -> int:
    """EXIT_FATAL, with stdout sent to /dev/null: what is left in its buffer is of no
    use, and flushing it at exit into a closed pipe would print a Python message
    on stderr and exit 120."""
    with contextlib.suppress(OSError):
        null = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
        os.dup2(null, 1)
        os.close(null)
    return EXIT_FATAL


def _more_fds() -> None:
    """One fd per directory level is held open: allow as many as the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _mend(reporter: Reporter, tree: str, manifest: str) -> None:
    fd = _open_root(tree)
    try:
        mend(reporter, fd, lambda: _manifest_lines(manifest))
    finally:
        os.close(fd)
    reporter.summary("mend")


def _manifest_lines(path: str) -> Iterator[bytes]:
    try:
        yield from _lines(path)
    except ValueError as e:
        raise Fatal(f"manifest: {e}") from None


def _scan(reporter: Reporter, root: str, out: IO[bytes]) -> None:
    started = time.time_ns()
    digest = TreeDigest()
    fd = _open_root(root)
    counts = reporter.counts
    for entry in Scanner(reporter).entries(fd):
        line, digest_line = entry.lines()
        if not _fits(reporter, entry, line):
            continue
        out.write(line)
        digest.add_line(digest_line)
        counts.entries += 1
        counts.files += entry.type == "file"
    out.flush()
    reporter.summary("scan", digest=digest.hexdigest(), started_ns=started)


def _fits(reporter: Reporter, entry: Entry, line: bytes) -> bool:
    """Whether `line`, `entry`'s, is one every reader takes (at most MAX_LINE bytes: many
    large xattrs can make it longer); if not, it is an error, and left out: a manifest
    no one could read back must never be committed."""
    if len(line) <= MAX_LINE:
        return True
    reporter.error(entry.path, "manifest", f"its manifest line is over {MAX_LINE >> 20} MiB")
    return False


def _copy(reporter: Reporter, args: argparse.Namespace, out: IO[bytes]) -> None:
    src = _open_root(args.src)
    groups = _stored_groups(args.groups) if args.groups is not None else None
    dst = _make_dst(args.dst)
    prev = None
    if args.prev is not None:
        tree, manifest = args.prev
        prev_fd = _open_root(tree)
        if os.fstat(prev_fd).st_dev != os.fstat(dst).st_dev:
            raise Fatal(f"previous tree {shown(tree)} is not on the destination's filesystem")
        try:
            cursor = ManifestCursor(_lines(manifest))
        except ValueError as e:  # its first line: linked from nothing (see Copier._before)
            reporter.warning(ROOT, f"the previous manifest is damaged ({e}): not linked from")
        else:
            # Where pages are never written back (tmpfs), writes through a shared mapping
            # move no ctime after their first: an identity unchanged proves nothing there,
            # so a file is linked only if its content, read now, is the previous one's.
            by_content = args.prev_by_content or not _written_back(src)
            prev = Prev(prev_fd, cursor, args.prev_started, by_content)
    # The start is taken before the flush: a write after it shows in ctime (see _syncfs).
    started = time.time_ns()
    if not args.no_sync:
        _syncfs(src)
    digest = TreeDigest()
    seal = _Seal()
    counts = reporter.counts

    def emit(entry: Entry) -> None:
        line, digest_line = entry.lines()
        if not _fits(reporter, entry, line):
            return
        out.write(line)
        digest.add_line(digest_line)
        if args.seal:
            seal.add(entry, digest_line)
        counts.entries += 1
        counts.files += entry.type == "file"

    sink = out
    with contextlib.ExitStack() as closing:
        if args.gzip:  # closed at the end of the block: its trailer goes into `sink`
            packed = gzip.GzipFile(fileobj=sink, mode="wb", compresslevel=GZIP_LEVEL, mtime=0)
            out = cast(IO[bytes], closing.enter_context(packed))
        Copier(reporter, src, dst, started, emit, prev, args.private_root, groups).run()
    sink.flush()
    # The last change the copy made (its root's times, applied last): `settled` holds a
    # copy left to others for a while (a restore's staging directory) to it.
    root = os.fstat(dst)
    settled = root.st_ctime_ns
    sealed = {}
    if args.seal:
        _check_sealed(reporter, dst, settled, seal.hexdigest())
        sealed = {"seal": seal.hexdigest(), "root": f"{root.st_dev}:{root.st_ino}"}
    reporter.summary(
        "copy", digest=digest.hexdigest(), started_ns=started, settled_ns=settled, **sealed
    )


class _Seal:
    """What a copied tree holds, as a fresh scan of it sees it: every entry but the root
    (a staging directory's own mode is not the snapshot's), by its digest line and mtime."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()

    def add(self, entry: Entry, digest_line: bytes) -> None:
        if entry.path != ROOT:
            self._hash.update(digest_line)
            self._hash.update(b"%d\n" % entry.mtime_ns)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# How long after the copy's last change its read-back begins: longer than a tick of the
# coarse clock that stamps ctimes, so that any write from then on has a later ctime.
SEAL_GAP_NS = 50_000_000


def _check_sealed(reporter: Reporter, dst: int, settled: int, want: str) -> None:
    """Hold the copy just made in `dst` to what the copy wrote (`want`, a _Seal's).

    Others may write where it was made while the copy runs (the containers that use
    a restore's target, which keep running while it is staged), and the copy's own
    changes to an entry (its mode and times, set last) hide theirs from ctime. So the
    tree is read back, after a pause that puts every later write's ctime past
    `settled`: a change before the read-back is in what is read (an error: a mismatch
    of the copy), one after it moves a ctime past `settled`, which `settled` catches.
    """
    while (left := settled + SEAL_GAP_NS - time.time_ns()) > 0:
        time.sleep(left / 1e9)
    # Written back, so that a page mapped shared and writable before now faults again on
    # its next write, which moves its file's ctime (see _syncfs); and the staged data is on
    # disk before the swap makes it the volume's.
    _syncfs(dst)
    if _resealed(reporter, dst) != want:
        reporter.error(ROOT, "seal", "the copy was changed by someone else while it was made")


def _resealed(reporter: Reporter, root: int) -> str:
    """The _Seal of the tree at `root`, as a scan finds it now."""
    found = _Seal()
    for entry in Scanner(reporter).entries(root):
        found.add(entry, entry.digest_line())
    return found.hexdigest()


# Filesystems whose dirty pages are never written back: a page mapped shared and
# writable stays so after a sync, and its writes move no ctime. By name, as
# /proc/self/mountinfo spells it, and by statfs(2)'s f_type.
_NO_WRITEBACK = {"tmpfs", "ramfs"}
_NO_WRITEBACK_MAGIC = {0x01021994, 0x858458F6}  # TMPFS_MAGIC, RAMFS_MAGIC


def _written_back(fd: int) -> bool:
    """Whether the filesystem of `fd` writes its pages back (and so write-protects them
    again on a sync); False where that cannot be told."""
    magic = _fs_magic(fd)
    if magic is not None:
        return magic not in _NO_WRITEBACK_MAGIC
    # No ctypes: the mount whose device is the file's (not btrfs's: each of its
    # subvolumes has a device number of its own, which mountinfo does not show).
    st = os.fstat(fd)
    want = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields_, sep, rest = line.partition(" - ")
                parts = fields_.split()
                if sep and len(parts) > 2 and parts[2] == want:
                    return rest.split()[0] not in _NO_WRITEBACK
    except OSError:
        pass
    return False


def _settled(reporter: Reporter, tree: str, since: int, root: str | None, seal: str | None) -> None:
    """Whether the tree at TREE is still as a copy left it: no entry changed since NS (its
    ctime, which no one can set back: a write, a chmod, a rename or removal of a child,
    all move it), reading metadata only. Each changed entry is a mismatch (exit 1); the
    summary counts the entries, for the caller to hold to the copy's.

    `root` (DEV:INO): TREE must be the very directory the copy made, not another put in
    its place. `seal`: where writes through a shared mapping made before the copy's
    read-back move no ctime (a filesystem that never writes back, or one that cannot be
    told), the tree is read back again and held to it: content, not metadata only."""
    fd = _open_root(tree)
    st = os.fstat(fd)
    if root is not None and f"{st.st_dev}:{st.st_ino}" != root:
        reporter.error(ROOT, "settled", "not the directory the copy made: it was replaced")
        reporter.summary("settled")
        return
    if seal is not None and not _written_back(fd) and _resealed(reporter, fd) != seal:
        reporter.error(ROOT, "seal", "the copy was changed by someone else after it was made")
    counts = reporter.counts
    for kind, node in walk(fd, reporter.error, lambda: None):
        if kind == Kind.LEAVE:
            continue
        counts.entries += 1
        if node.st.st_ctime_ns > since:
            counts.mismatches += 1
            if counts.mismatches <= 10:
                reporter.warning(node.path, "changed after the copy")
    reporter.summary("settled")


def _verify(reporter: Reporter, tree: str, manifest: str, out: IO[bytes], stored: bool) -> None:
    fd = _open_root(tree)
    groups = _stored_groups(manifest) if stored else None
    try:
        tree_digest, manifest_digest = verify(
            reporter, fd, ManifestCursor(_lines(manifest)), out.write, groups
        )
    except ValueError as e:
        raise Fatal(f"manifest: {e}") from None
    out.flush()
    reporter.summary("verify", digest=tree_digest, manifest_digest=manifest_digest)


def _stored_groups(manifest: str) -> LinkGroups:
    """The hard-link groups of a stored tree, read from its manifest: the tree's link
    counts include the links of the other snapshots that share its files."""
    try:
        return LinkGroups(expected_groups(_lines(manifest)))
    except OSError as e:
        raise Fatal(f"cannot read the manifest {shown(manifest)}: {e.strerror}") from None
    except ValueError as e:
        raise Fatal(f"manifest: {e}") from None


def _open_root(path: str) -> int:
    """The directory a command works on (walk.open_root: its last component never followed)."""
    try:
        return open_root(path)
    except OSError as e:
        raise Fatal(f"cannot open {shown(path)}: {e.strerror}") from None


def _make_dst(path: str) -> int:
    """The destination: made now (0o700), or an existing empty directory (made 0o700)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    fd = os.open(path, _DIR | os.O_NOFOLLOW)
    if os.listdir(fd):
        os.close(fd)
        raise Fatal(f"destination {shown(path)} is not empty")
    os.fchmod(fd, 0o700)
    return fd


def _lines(path: str) -> Iterator[bytes]:
    """The lines of a manifest file ("-": stdin), plain or gzip-compressed (`copy --gzip`),
    each at most MAX_LINE bytes. ValueError if it is neither, or cut short."""
    raw = sys.stdin.buffer if path == "-" else _open_regular_file(path)
    assert isinstance(raw, io.BufferedReader)
    f: IO[bytes] = raw
    if raw.peek(2)[:2] == _GZIP_MAGIC:
        f = cast(IO[bytes], gzip.GzipFile(fileobj=raw, mode="rb"))
    with raw, f:
        while True:
            try:
                line = f.readline(MAX_LINE + 1)
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise ValueError(f"the compressed manifest is corrupt or cut short ({e})") from None
            if not line:
                return
            if len(line) > MAX_LINE or not line.endswith(b"\n"):
                raise ValueError("a line is too long or unterminated")
            yield line


def _open_regular_file(path: str) -> io.BufferedReader:
    """`path` opened for reading if it is a regular file, never through a symlink in its
    last component, nor blocking on a FIFO put in its place (ValueError otherwise)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{shown(path)} is not a regular file")
    return os.fdopen(fd, "rb")


def _fs_magic(fd: int) -> int | None:
    """fstatfs(2)'s f_type of `fd`'s filesystem; None where it cannot be had (not in the
    os module: through ctypes, which a minimal image may lack)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        buf = ctypes.create_string_buffer(256)  # struct statfs, 120 bytes on 64-bit Linux
        if libc.fstatfs(fd, buf) != 0:
            return None
        return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF  # f_type, its first field
    except (ImportError, OSError, AttributeError):
        return None


def _syncfs(fd: int) -> None:
    """Write back the source's dirty pages before it is listed.

    A write through a shared mmap to a page that is already dirty does not
    update ctime; once written back, the next write faults and does. Flushing
    first makes every later write show in ctime, which is what lets the next
    incremental copy trust an unchanged ctime. syncfs(2) is not in the os
    module: it is called through ctypes, or else the whole system is synced.
    """
    try:
        import ctypes  # not in every Python build: a minimal image may lack libffi

        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) == 0:
            return
    except (ImportError, OSError, AttributeError):
        pass
    os.sync()
