"""export and import against the real engine: round trips, plain tars, hostile archives."""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.hostile import COMPRESSIONS, CORPUS, Case, compress
from tests.integration.dockertools import (
    F1,
    FIDELITY_SCRIPT,
    Docker,
    hold_env,
    records,
    start_voltool,
    voltool,
    wait_for,
)
from tests.tarbuild import d, f, make_tar
from voltool.tar.compression import Compression

pytestmark = pytest.mark.engine


# Import makes format-1 snapshots: these tests take theirs in format 1 too (stored
# snapshots are exported and imported in test_store_io).
@pytest.fixture(autouse=True)
def format_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in F1.items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    """A directory for the test's archives alone (voltool's state lives in tmp_path)."""
    out = tmp_path / "files"
    out.mkdir()
    return out


def _snapshot(vol: str) -> str:
    r = voltool("snapshot", "--json", vol)
    assert r.code == 0, r.err
    return str(records(r.out)[0]["id"])


def _import(path: Path | str, *args: str) -> dict[str, object]:
    r = voltool("import", str(path), "--json", *args)
    assert r.code == 0, r.err
    record = json.loads(r.out)
    assert isinstance(record, dict)
    return record


def _restore_into_new(sid: str, target: str) -> None:
    r = voltool("restore", sid, "--to", target, "--create", "--yes")
    assert r.code == 0, r.err


def _digest(volume: str) -> str:
    r = voltool("digest", volume)
    assert r.code == 0, r.err
    return r.out.strip()


@pytest.mark.parametrize("kind", COMPRESSIONS, ids=lambda k: k.value)
def test_round_trip_through_an_export_file_keeps_every_entry(
    dk: Docker, volume: Callable[..., str], files: Path, kind: Compression
) -> None:
    original = volume(FIDELITY_SCRIPT)
    sid = _snapshot(original)
    path = files / f"backup{kind.suffix}"
    r = voltool("export", sid, "-o", str(path))
    assert r.code == 0, r.err
    assert f"to {path}" in r.err and kind.value in r.err
    assert [p.name for p in files.iterdir()] == [path.name]  # no temporary file left
    again = files / "again" / path.name
    again.parent.mkdir()
    assert voltool("export", sid, "-o", str(again)).code == 0
    assert again.read_bytes() == path.read_bytes()  # exports are reproducible

    home = volume()  # the name the import is filed under; cleaned up with its snapshots
    record = _import(path, "--volume", home)
    assert record["kind"] == "import" and record["source"] == home
    assert record["id"] != sid
    assert record["origin_id"] == sid
    assert record["note"] is None

    target = f"{home}-restored"
    try:
        _restore_into_new(str(record["id"]), target)
        assert dk.listing(target).entries == dk.listing(original).entries
        assert _digest(target) == _digest(original)
    finally:
        dk.client.volumes.get(target).remove(force=True)
    assert dk.managed_containers() == []


def test_export_to_stdout_piped_into_import_from_stdin(
    dk: Docker, volume: Callable[..., str]
) -> None:
    original = volume("cd /v && echo one > a && mkdir d && echo two > d/b && chmod 700 d")
    sid = _snapshot(original)
    home = volume()
    cmd = [sys.executable, "-m", "voltool"]
    exporter = subprocess.Popen(
        [*cmd, "export", sid], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    importer = subprocess.run(
        [*cmd, "import", "-", "--volume", home, "--name", "piped", "--json"],
        stdin=exporter.stdout,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert exporter.stdout is not None
    exporter.stdout.close()
    assert exporter.wait(60) == 0, exporter.stderr.read() if exporter.stderr else ""
    assert importer.returncode == 0, importer.stderr
    record = json.loads(importer.stdout)
    assert record["name"] == "piped"
    r = voltool("list", home, "--json")
    listed = records(r.out)
    assert [s["id"] for s in listed] == [record["id"]]
    assert (
        listed[0]["tree_digest"] == json.loads(voltool("inspect", sid, "--json").out)["tree_digest"]
    )


def test_an_imported_snapshot_needs_to_for_a_restore(
    dk: Docker, volume: Callable[..., str], files: Path
) -> None:
    original = volume("echo data > /v/f")
    sid = _snapshot(original)
    path = files / "x.tar.gz"
    assert voltool("export", sid, "-o", str(path)).code == 0
    imported = _import(path, "--volume", original)  # even filed under the original's name
    before = dk.listing(original).entries
    r = voltool("restore", str(imported["id"]), "--yes")
    assert r.code == 2
    assert "was imported: name the volume to restore into with --to" in r.err
    assert dk.listing(original).entries == before


def test_a_docker_cp_tar_imports_as_the_volume_it_came_from(
    dk: Docker, volume: Callable[..., str], files: Path
) -> None:
    original = volume(FIDELITY_SCRIPT)
    holder = dk.client.containers.create(
        dk.image, ["true"], volumes={original: {"bind": "/data", "mode": "ro"}}
    )
    path = files / "cp.tar"
    try:
        with open(path, "wb") as out:
            subprocess.run(["docker", "cp", f"{holder.id}:/data", "-"], stdout=out, check=True)
    finally:
        holder.remove(force=True)
    home = volume()
    record = _import(path, "--volume", home)
    assert record["origin_id"] is None
    assert record["tree_digest"] == _digest(original)


def test_a_tar_of_a_host_directory_imports_with_its_modes(
    dk: Docker, volume: Callable[..., str], files: Path
) -> None:
    tree = files / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"content\n")
    (tree / "sub" / "f").chmod(0o640)
    (tree / "link").symlink_to("sub/f")
    path = files / "host.tar.zst"
    tar = subprocess.run(
        ["tar", "-C", str(tree), "--owner=0", "--group=0", "-c", "."],
        capture_output=True,
        check=True,
    )
    path.write_bytes(compress(tar.stdout, Compression.ZSTD))
    home = volume()
    record = _import(path, "--volume", home)
    target = f"{home}-restored"
    try:
        _restore_into_new(str(record["id"]), target)
        got = dk.listing(target).entries
        assert got["sub/f"].mode == 0o640 and got["sub/f"].size == 8
        assert got["link"].target == "sub/f"
    finally:
        dk.client.volumes.get(target).remove(force=True)


@pytest.mark.parametrize("case", CORPUS, ids=lambda c: c.id)
def test_hostile_archives_are_refused_and_leave_nothing(
    dk: Docker, files: Path, case: Case
) -> None:
    def unfiled() -> set[str]:
        """Snapshot volumes not filed under a test volume: where a hostile import would land
        (other tests, in parallel, file theirs under their own vt- volumes)."""
        return {
            v.name
            for v in dk.client.volumes.list(filters={"label": "io.voltool.role=snapshot"})
            if not (v.attrs.get("Labels") or {})
            .get("io.voltool.snapshot.source", "")
            .startswith("vt-")
        }

    volumes_before = unfiled()
    raw = case.build()
    for kind in COMPRESSIONS:
        path = files / f"hostile{kind.suffix}"
        path.write_bytes(compress(raw, kind))
        r = voltool("import", str(path), *case.args)
        assert r.code == case.code, (kind, r.err)
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and case.message in lines[0], (kind, r.err)
        assert unfiled() == volumes_before, kind
        assert dk.managed_containers() == [], kind


def test_export_of_a_damaged_snapshot_fails_and_writes_no_file(
    dk: Docker, volume: Callable[..., str], files: Path
) -> None:
    original = volume("echo payload > /v/f")
    sid = _snapshot(original)
    dk.run(
        {f"voltool-snap-{sid}": "/s"},
        'cd /s/data && m=$(stat -c %Y f) && echo PAYLOAD > f && touch -d "@$m" f',
    )
    r = voltool("export", sid, "-o", str(files / "out.tar.zst"))
    assert r.code == 6
    assert "'f' does not match its manifest (content differs)" in r.err
    assert list(files.iterdir()) == []


def test_export_refuses_a_terminal_and_a_contradictory_suffix(
    volume: Callable[..., str], files: Path
) -> None:
    sid = _snapshot(volume("echo x > /v/x"))
    primary, secondary = pty.openpty()
    try:
        p = subprocess.run(
            [sys.executable, "-m", "voltool", "export", sid],
            stdout=secondary,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert p.returncode == 2
    assert "refusing to write an archive to a terminal" in p.stderr
    r = voltool("export", sid, "-o", str(files / "a.tar.gz"), "--compress", "zstd")
    assert r.code == 2 and "names gzip compression but --compress says zstd" in r.err
    assert list(files.iterdir()) == []


def test_import_refuses_names_in_use_and_missing_files(
    volume: Callable[..., str], files: Path
) -> None:
    home = volume()
    path = files / "t.tar"
    path.write_bytes(_small_tar())
    _import(path, "--volume", home, "--name", "first")
    r = voltool("import", str(path), "--volume", home, "--name", "first")
    assert r.code == 2 and "already has a snapshot named 'first'" in r.err
    r = voltool("import", str(files / "missing.tar"))
    assert r.code == 3 and "no file" in r.err
    r = voltool("import", str(path), "--max-bytes", "lots")
    assert r.code == 2 and "is not a size" in r.err


def _small_tar() -> bytes:
    return make_tar([d("./"), f("./a", b"1")])


@pytest.mark.parametrize("how", ["SIGKILL", "SIGINT"])
def test_an_import_cut_short_leaves_nothing_after_recover(
    dk: Docker, volume: Callable[..., str], files: Path, how: str
) -> None:
    home = volume()
    path = files / "t.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(3):
            info = tarfile.TarInfo(f"f{i}")
            data = os.urandom(1024)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    hold = files / "hold"
    proc = start_voltool("import", str(path), "--volume", home, env=hold_env("stream", hold))
    wait_for(hold.exists, what="the import to reach its stream step")
    assert len(dk.snapshot_volumes(home)) == 1  # created, not committed
    if how == "SIGKILL":
        proc.kill()
        proc.wait(30)
        r = voltool("recover", home)
        assert r.code == 0, r.err
        assert "remove incomplete snapshot" in r.out + r.err
    else:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
    assert dk.snapshot_volumes(home) == []
    assert dk.managed_containers() == []
    r = voltool("recover", home, "--dry-run")
    assert r.code == 0 and "remove" not in r.out
