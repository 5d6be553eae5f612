"""Where an export lands and how file errors read, with no engine: userfile.py and the CLI's
checks that run before it connects."""

from __future__ import annotations

import errno
import os
import socket
import stat
import threading
from pathlib import Path
from typing import Any

import pytest

from voltool import userfile
from voltool.cli.app import run
from voltool.errors import ExitCode, FileError, NoSpace, NotFound, UsageError, VoltoolError

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


def _write(name: str, data: bytes) -> None:
    with userfile.written(userfile.destination(name)) as out:
        out.write(data)


class Boom(Exception):
    pass


def test_a_new_file_appears_whole_and_nothing_else_is_left(tmp_path: Path) -> None:
    _write(str(tmp_path / "a.tar"), b"x" * (3 * 1024 * 1024 + 5))
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]
    assert (tmp_path / "a.tar").stat().st_size == 3 * 1024 * 1024 + 5


def test_an_existing_file_is_replaced_only_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "a.tar"
    path.write_bytes(b"old")
    with userfile.written(userfile.destination(str(path))) as out:
        out.write(b"new" * 500_000)
        out.flush()
        assert path.read_bytes() == b"old"  # still the old file while the new one is written
    assert path.read_bytes() == b"new" * 500_000
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]


def test_a_failure_leaves_no_file_and_the_old_one_whole(tmp_path: Path) -> None:
    with pytest.raises(Boom), userfile.written(userfile.destination(str(tmp_path / "new.tar"))):
        raise Boom
    old = tmp_path / "old.tar"
    old.write_bytes(b"old")
    with pytest.raises(Boom), userfile.written(userfile.destination(str(old))) as out:
        out.write(b"partial")
        out.flush()
        raise Boom
    assert [p.name for p in tmp_path.iterdir()] == ["old.tar"]
    assert old.read_bytes() == b"old"


def _no_tmpfile(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:
            raise OSError(code, os.strerror(code))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(userfile.os, "open", fake_open)


@pytest.mark.parametrize("code", [errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL])
def test_without_o_tmpfile_a_hidden_part_file_is_used_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    _no_tmpfile(monkeypatch, code)
    seen: list[str] = []
    with userfile.written(userfile.destination(str(tmp_path / "a.tar"))) as out:
        out.write(b"data")
        seen = [p.name for p in tmp_path.iterdir()]
    assert len(seen) == 1 and seen[0].startswith(".a.tar.") and seen[0].endswith(".part")
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]
    assert (tmp_path / "a.tar").read_bytes() == b"data"
    with pytest.raises(Boom), userfile.written(userfile.destination(str(tmp_path / "b.tar"))):
        raise Boom
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar"]


def test_a_symlink_stays_a_link_and_its_target_is_written(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "t.tar"
    target.write_bytes(b"old")
    link = tmp_path / "link.tar"
    link.symlink_to(target)
    dest = userfile.destination(str(link))
    assert dest.is_file and dest.path == target.resolve()
    _write(str(link), b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.tar", "real"]
    dangling = tmp_path / "dangling.tar"
    dangling.symlink_to("real/made.tar")
    _write(str(dangling), b"made")
    assert dangling.is_symlink() and (tmp_path / "real" / "made.tar").read_bytes() == b"made"


def test_a_fifo_is_written_in_place(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    data = os.urandom(3 * 1024 * 1024)
    _write(str(fifo), data)
    reader.join(30)
    assert got == [data]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@as_root
def test_character_devices_are_written_in_place_and_a_full_one_is_no_space(
    tmp_path: Path,
) -> None:
    null, full = tmp_path / "null", tmp_path / "full"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    _write(str(null), b"x" * 100)
    with pytest.raises(NoSpace) as caught:
        _write(str(full), b"x" * 100)
    assert str(caught.value) == f"cannot write {full}: No space left on device"
    for dev in (null, full):
        assert stat.S_ISCHR(dev.lstat().st_mode)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "null"]


@as_root
def test_a_block_device_a_directory_and_a_socket_are_refused(tmp_path: Path) -> None:
    block = tmp_path / "block"
    os.mknod(block, 0o600 | stat.S_IFBLK, os.makedev(7, 250))
    with pytest.raises(UsageError, match="is a block device"):
        userfile.destination(str(block))
    with pytest.raises(UsageError, match="is a directory"):
        userfile.destination(str(tmp_path))
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(tmp_path / "sock"))
        with pytest.raises(UsageError, match="is a socket"):
            userfile.destination(str(tmp_path / "sock"))
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("name", "kind", "message"),
    [
        ("/proc/voltool-test.tar", FileError, "/proc does not accept new files"),
        ("/sys/voltool-test.tar", FileError, "cannot create /sys/voltool-test.tar"),
        ("/nonexistent-dir/x.tar", NotFound, "directory /nonexistent-dir does not exist"),
        ("/etc/hostname/x.tar", NotFound, "is not a directory"),
    ],
)
def test_directories_that_take_no_file_are_one_line_errors(
    name: str, kind: type[VoltoolError], message: str
) -> None:
    with pytest.raises(kind) as caught:
        _write(name, b"x")
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_closed_pipe_is_a_file_error(tmp_path: Path) -> None:
    r, w = os.pipe()
    os.close(r)
    out = userfile.Output(w, "stdout")
    try:
        out.write(b"x")
        with pytest.raises(FileError, match="the reader of stdout closed it"):
            out.flush()
        out.flush()  # what could not be written is dropped, not retried
    finally:
        os.close(w)


def test_a_read_error_is_a_file_error() -> None:
    class Failing:
        def read(self, n: int = -1) -> bytes:
            raise OSError(errno.EIO, os.strerror(errno.EIO))

    with pytest.raises(FileError) as caught:
        userfile.Input(Failing(), "in.tar").read(10)  # type: ignore[arg-type]
    assert str(caught.value) == "cannot read in.tar: Input/output error"
    assert caught.value.exit_code == ExitCode.FILE


@pytest.mark.parametrize("name", ["backup.zip", "out.dat", "noext"])
def test_an_output_name_without_an_archive_suffix_needs_compress(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["export", "abcd", "-o", str(tmp_path / name)])
    err = capsys.readouterr().err
    assert code == ExitCode.USAGE
    assert "does not end in an archive suffix (.tar.zst, .tzst, .zst, .tar.gz" in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_a_missing_output_directory_is_not_found_before_the_engine_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = run(["export", "abcd", "-o", str(tmp_path / "no" / "x.tar")])
    assert code == ExitCode.NOT_FOUND
    assert f"directory {tmp_path / 'no'} does not exist" in capsys.readouterr().err
