"""export -o against the real engine: devices, FIFOs and symlinks are written through, a
kill leaves nothing, and file-system problems are one line with their exit code."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.dockertools import hold_env, records, start_voltool, voltool, wait_for

pytestmark = pytest.mark.engine

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="mknod needs root")


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory for the test's exports alone (voltool's state lives in tmp_path)."""
    out = tmp_path / "files"
    out.mkdir()
    return out


@pytest.fixture
def sid(volume: Callable[..., str]) -> str:
    r = voltool("snapshot", "--json", volume("cd /v && echo one > a && mkdir d && echo 2 > d/b"))
    assert r.code == 0, r.err
    return str(records(r.out)[0]["id"])


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("voltool: error: "), err
    return lines[0]


def _reference(sid: str, where: Path) -> bytes:
    """The export's bytes, as a plain file (exports are reproducible)."""
    path = where / "reference.tar.zst"
    r = voltool("export", sid, "-o", str(path))
    assert r.code == 0, r.err
    data = path.read_bytes()
    path.unlink()
    return data


@as_root
def test_character_devices_are_written_in_place(sid: str, files: Path) -> None:
    null, full = files / "null", files / "full"
    os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    r = voltool("export", sid, "-o", str(null))
    assert r.code == 0, r.err
    r = voltool("export", sid, "-o", str(full))
    assert r.code == 7, r.err
    assert _one_line(r.err) == f"voltool: error: cannot write {full}: No space left on device"
    for dev in (null, full):
        assert stat.S_ISCHR(dev.lstat().st_mode), dev
    assert sorted(p.name for p in files.iterdir()) == ["full", "null"]


def test_a_fifo_is_written_in_place_and_its_reader_gets_the_whole_export(
    sid: str, files: Path
) -> None:
    want = _reference(sid, files)
    fifo = files / "pipe"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    r = voltool("export", sid, "-o", str(fifo))
    assert r.code == 0, r.err
    reader.join(60)
    assert got == [want]
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in files.iterdir()] == ["pipe"]


def test_a_symlink_stays_a_link_and_its_target_holds_the_export(sid: str, files: Path) -> None:
    want = _reference(sid, files)
    (files / "real").mkdir()
    target = files / "real" / "target.tar.zst"
    target.write_bytes(b"old")
    link = files / "link.tar.zst"
    link.symlink_to(target)
    r = voltool("export", sid, "-o", str(link))
    assert r.code == 0, r.err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes() == want
    assert sorted(p.name for p in files.iterdir()) == ["link.tar.zst", "real"]
    assert [p.name for p in (files / "real").iterdir()] == ["target.tar.zst"]


@pytest.mark.parametrize("existing", [False, True], ids=["new-name", "over-a-file"])
def test_a_killed_export_leaves_no_file_behind(sid: str, files: Path, existing: bool) -> None:
    dest = files / "out" / "backup.tar.zst"
    dest.parent.mkdir()
    if existing:
        dest.write_bytes(b"the previous backup")
    hold = files / "hold"
    proc = start_voltool("export", sid, "-o", str(dest), env=hold_env("export-data", hold))
    try:
        wait_for(hold.exists, what="the export to reach its data")
        proc.kill()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    if existing:
        assert [p.name for p in dest.parent.iterdir()] == ["backup.tar.zst"]
        assert dest.read_bytes() == b"the previous backup"
    else:
        assert list(dest.parent.iterdir()) == []
    # The killed process's helper and lock, on the volume that holds the snapshot.
    held_in = json.loads(voltool("inspect", "--json", sid).out)["volume"]
    r = voltool("recover", held_in)
    assert r.code == 0, r.err


def test_file_system_problems_are_one_line_with_their_code(sid: str, files: Path) -> None:
    cases = [
        ("/proc/voltool-test.tar.zst", 12, "/proc does not accept new files"),
        ("/sys/voltool-test.tar.zst", 12, "cannot create /sys/voltool-test.tar.zst"),
        (str(files / "missing" / "x.tar.zst"), 3, f"directory {files / 'missing'} does not"),
        (str(files / "backup.zip"), 2, "does not end in an archive suffix (.tar.zst"),
    ]
    for path, code, message in cases:
        r = voltool("export", sid, "-o", path)
        assert r.code == code, (path, r.err)
        assert message in _one_line(r.err), (path, r.err)
    r = voltool("export", sid, "-o", str(files / "backup.zip"), "--compress", "gzip")
    assert r.code == 0, r.err
    assert [p.name for p in files.iterdir()] == ["backup.zip"]
    r = voltool("import", "/proc/self/mem")  # opens, then every read fails with EIO
    assert r.code == 12, r.err
    assert _one_line(r.err) == "voltool: error: cannot read /proc/self/mem: Input/output error"


def test_stdout_full_or_closed_is_one_line_and_no_traceback(sid: str, files: Path) -> None:
    with open("/dev/full", "wb") as full:
        p = subprocess.run(
            [sys.executable, "-m", "voltool", "export", sid],
            stdout=full,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=120,
        )
    assert p.returncode == 7, p.stderr
    assert "cannot write stdout: No space left on device" in _one_line(p.stderr)

    # The reader goes away while the export is held before its data: every write after
    # that meets a pipe with no reader (EPIPE), whatever the machine's speed.
    hold = files / "hold"
    proc = start_voltool("export", sid, env=hold_env("export-data", hold))
    try:
        wait_for(hold.exists, what="the export to reach its data")
        assert proc.stdout is not None
        proc.stdout.close()
        hold.unlink()
        proc.wait(120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == 12, err
    assert _one_line(err) == "voltool: error: the reader of stdout closed it before the end"
