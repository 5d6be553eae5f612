"""Stored (format-2) snapshots leaving and entering stores: export, import, migrate."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import CORPUS, Case, gzip_bomb, make_export
from tests.integration.dockertools import (
    F1,
    F2,
    FIDELITY_SCRIPT,
    SMALL_TREE,
    Docker,
    hold_env,
    records,
    snapshot_record,
    start_voltool,
    voltool,
    wait_for,
)
from tests.tarbuild import d, f, make_tar, sym
from voltool.store.layout import MANIFEST
from voltool.store.manifest import ManifestBuilder, ManifestEntry
from voltool.tar.compression import reader

pytestmark = pytest.mark.engine


def test_a_stored_snapshot_exports_imports_and_restores_as_its_source(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    original = volume(FIDELITY_SCRIPT)
    made = snapshot_record(original, "--name", "kept", env=F2)
    assert made["volume"] == f"voltool-store-{original}"
    path = tmp_path / "out.tar.zst"
    r = voltool("export", made["id"], "-o", str(path))
    assert r.code == 0, r.err
    again = tmp_path / "again.tar.zst"
    assert voltool("export", made["id"], "-o", str(again)).code == 0
    assert again.read_bytes() == path.read_bytes()  # exports are reproducible

    home = volume()
    r = voltool("import", str(path), "--json", "--volume", home)
    assert r.code == 0, r.err
    (imported,) = records(r.out)
    assert imported["kind"] == "import" and imported["origin_id"] == made["id"]
    assert voltool("verify", imported["id"]).code == 0

    target = volume()
    r = voltool("restore", imported["id"], "--to", target, "--yes")
    assert r.code == 0, r.err
    want, got = dk.listing(original), dk.listing(target)
    assert got.entries == want.entries
    assert got.links == want.links
    assert dk.managed_containers() == []


def test_a_tampered_store_is_not_exported(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume("echo small > /v/small.txt; echo other > /v/other")
    made = snapshot_record(vol, env=F2)
    store = made["volume"]
    dk.run({store: "/s"}, 'echo SMALL > "/s/snapshots/$1/data/small.txt"', made["id"])
    _export_refused(dk, made["id"], tmp_path, "does not match")


def _export_refused(dk: Docker, sid: str, tmp_path: Path, message: str) -> None:
    """An export of `sid` fails with exit 6 and `message`, and leaves nothing behind."""
    files = tmp_path / "files"
    files.mkdir()
    r = voltool("export", sid, "-o", str(files / "out.tar.zst"))
    assert r.code == 6, r.err
    assert message in r.err
    assert list(files.iterdir()) == []
    assert dk.managed_containers() == []


def test_a_store_altered_after_its_check_is_not_exported(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    """The export's bytes are the ones checked: the store is held to its manifest between
    the pass that reads its data and the pass that writes it, which must agree (checked
    before both, a store altered just after the check would be exported as altered)."""
    vol = volume("echo small > /v/small.txt; echo other > /v/other")
    made = snapshot_record(vol, env=F2)
    files = tmp_path / "files"
    files.mkdir()
    hold = tmp_path / "hold"
    proc = start_voltool(
        "export", made["id"], "-o", str(files / "out.tar.zst"), env=hold_env("export-checked", hold)
    )
    try:
        wait_for(hold.exists, what="the export to be checked")
        dk.run({made["volume"]: "/s"}, 'echo SMALL > "/s/snapshots/$1/data/small.txt"', made["id"])
        hold.unlink()
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 6, err
    assert "does not match" in err
    assert list(files.iterdir()) == []
    assert dk.managed_containers() == []


def test_a_store_whose_data_and_manifest_agree_but_not_its_digest_is_not_exported(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    """A file altered and the manifest made again to match it: the export's read of the
    data agrees with that manifest, but the manifest is not the one snapshot.json names."""
    vol = volume("echo small > /v/small.txt; echo other > /v/other")
    made = snapshot_record(vol, env=F2)
    base = f"/s/snapshots/{made['id']}"
    dk.client.containers.run(
        agent,
        ["-c", f"echo SMALL > {base}/data/small.txt && "
         f"python3 -I -m voltool_agent scan {base}/data > {base}/manifest.jsonl"],
        entrypoint=["/bin/sh"],
        volumes={made["volume"]: {"bind": "/s", "mode": "rw"}},
        network_mode="none",
        remove=True,
    )  # fmt: skip
    _export_refused(dk, made["id"], tmp_path, "not the one snapshot.json names")


def test_a_store_that_split_a_hard_link_group_is_not_exported(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    """Two names of one inode in the snapshot, two files of the same bytes in its store:
    each path's content is right, but the export would not be the snapshot. (Empty: a
    split group of any other size holds more bytes than the snapshot, refused for that.)"""
    vol = volume(": > /v/a && ln /v/a /v/b && echo other > /v/c")
    made = snapshot_record(vol, env=F2)
    dk.run(
        {made["volume"]: "/s"},
        'cd "/s/snapshots/$1/data" && cp -p b b.new && mv b.new b',
        made["id"],
    )
    _export_refused(dk, made["id"], tmp_path, "another hard-link group")


def _inodes(dk: Docker, store: str) -> dict[str, int]:
    """`<id>/<path>` -> inode of every regular file of every snapshot of `store`."""
    out = dk.run(
        {store: "/s"},
        'cd /s/snapshots && find . -path "*/data/*" -type f -exec stat -c "%i %n" {} +',
    )
    found = {}
    for line in out.splitlines():
        ino, name = line.split(" ", 1)
        sid, _, path = name.removeprefix("./").partition("/data/")
        found[f"{sid}/{path}"] = int(ino)
    return found


def _listed(vol: str) -> list[dict[str, Any]]:
    r = voltool("list", "--json", vol)
    assert r.code == 0, r.err
    return records(r.out)


def test_migrate_moves_format_1_snapshots_into_the_store(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("echo same > /v/same; echo one > /v/changes; mkdir /v/d; ln /v/same /v/d/h")
    first = snapshot_record(vol, "--name", "first", env=F1)
    assert voltool("pin", first["id"]).code == 0
    dk.run({vol: "/v"}, "echo two > /v/changes")
    second = snapshot_record(vol, "--name", "second", env=F1)
    assert first["volume"] == f"voltool-snap-{first['id']}"

    dry = voltool("migrate", "--all", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert {r["id"] for r in records(dry.out)} >= {first["id"], second["id"]}
    assert {s["volume"] for s in _listed(vol)} == {first["volume"], second["volume"]}
    doctor = records(voltool("doctor", "--json").out)
    (told,) = [c for c in doctor if c["name"] == "format" and "in format 1" in c["detail"]]
    assert told["status"] == "ok" and "`voltool migrate --all` moves them into" in told["detail"]

    r = voltool("migrate", "--json", second["id"], first["id"])
    assert r.code == 0, r.err
    moved = records(r.out)
    assert [m["id"] for m in moved] == [first["id"], second["id"]]  # oldest first
    store = f"voltool-store-{vol}"
    listed = {s["id"]: s for s in _listed(vol)}
    assert set(listed) == {first["id"], second["id"]}
    for old in (first, second):
        now = listed[old["id"]]
        assert now["volume"] == store and now["state"] == "complete"
        assert (now["name"], now["created"], now["kind"]) == (
            old["name"],
            old["created"],
            old["kind"],
        )
    assert listed[first["id"]]["pinned"] and not listed[second["id"]]["pinned"]
    r = voltool("verify", first["id"], second["id"])
    assert r.code == 0, r.err + r.out
    ino = _inodes(dk, store)
    a, b = first["id"], second["id"]
    assert ino[f"{a}/same"] == ino[f"{b}/same"] == ino[f"{a}/d/h"] == ino[f"{b}/d/h"]
    assert ino[f"{a}/changes"] != ino[f"{b}/changes"]
    names = {v.name for v in dk.client.volumes.list()}
    assert first["volume"] not in names and second["volume"] not in names
    assert dk.managed_containers() == []


@pytest.mark.parametrize("step", ["copied", "checked"])
def test_a_migrate_killed_before_the_removal_keeps_the_snapshot_volume(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path, step: str
) -> None:
    vol = volume("echo x > /v/x")
    old = snapshot_record(vol, "--name", "kept", env=F1)
    hold = tmp_path / "hold"
    proc = start_voltool("migrate", old["id"], env=hold_env(step, hold))
    wait_for(hold.exists, 120, f"the migrate to reach {step}")
    proc.kill()
    proc.wait(30)
    assert old["volume"] in {v.name for v in dk.client.volumes.list()}
    assert old["volume"] in {s["volume"] for s in _listed(vol)}
    r = voltool("recover", vol)
    assert r.code == 0, r.err
    listed = [s for s in _listed(vol) if s["id"] == old["id"]]
    assert len(listed) == 1
    assert listed[0]["volume"] == old["volume"] and listed[0]["state"] == "complete"
    assert voltool("verify", old["id"]).code == 0
    assert voltool("recover", vol).out.strip() == "nothing to recover"
    # and it moves once tried again
    r = voltool("migrate", old["id"])
    assert r.code == 0, r.err
    (now,) = _listed(vol)
    assert now["volume"] == f"voltool-store-{vol}" and now["name"] == "kept"
    assert dk.managed_containers() == []


# -- import into a store (format 2) -----------------------------------------


def _volumes(dk: Docker) -> set[str]:
    return {v.name for v in dk.client.volumes.list()}


def _store_holds(dk: Docker, vol: str) -> list[str] | None:
    """Every name in the snapshots/ directory of `vol`'s store (hidden ones too), or None
    if `vol` has no store (looked for first: mounting a missing volume would make one)."""
    store = f"voltool-store-{vol}"
    if store not in _volumes(dk):
        return None
    return sorted(dk.run({store: "/s"}, "ls -A /s/snapshots 2>/dev/null || true").split())


def _temporary(dk: Docker, vol: str) -> list[str]:
    """Format-1 snapshot volumes filed under `vol` (an import into a store stages in one)."""
    return [v for v in dk.snapshot_volumes(vol) if v.startswith("voltool-snap-")]


def _export_manifest(path: Path) -> bytes:
    """The manifest.jsonl member of an export file."""
    with open(path, "rb") as raw:
        _, chunks = reader(raw)
        data = b"".join(chunks)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        member = tar.extractfile(MANIFEST)
        assert member is not None
        return member.read()


def test_a_format_2_import_of_an_export_is_the_snapshot_it_came_from(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    original = volume(FIDELITY_SCRIPT)
    made = snapshot_record(original, "--name", "kept", "--note", "travels", env=F2)
    path = tmp_path / "out.tar.zst"
    assert voltool("export", made["id"], "-o", str(path)).code == 0
    assert voltool("delete", "--yes", made["id"]).code == 0
    assert _store_holds(dk, original) is None  # it went with its last snapshot

    r = voltool("import", str(path), "--json", env=F2)  # filed under the source it names
    assert r.code == 0, r.err
    (imported,) = records(r.out)
    store = f"voltool-store-{original}"
    assert imported["volume"] == store and imported["source"] == original
    assert imported["kind"] == "import" and imported["state"] == "complete"
    assert (imported["origin_id"], imported["origin_created"]) == (made["id"], made["created"])
    assert imported["tree_digest"] == made["tree_digest"]  # the very tree it was exported from
    assert (imported["entries"], imported["bytes"]) == (made["entries"], made["bytes"])
    assert (imported["name"], imported["note"]) == (None, "travels")
    assert _store_holds(dk, original) == [imported["id"]]
    assert _temporary(dk, original) == []
    (listed,) = _listed(original)
    assert listed["id"] == imported["id"] and listed["state"] == "complete"
    assert listed["tree_digest"] == made["tree_digest"]
    r = voltool("verify", imported["id"])
    assert r.code == 0, r.err + r.out

    assert voltool("restore", imported["id"], "--yes").code == 2  # an import needs --to
    target = volume()
    r = voltool("restore", imported["id"], "--to", target, "--yes", "--no-safety-snapshot")
    assert r.code == 0, r.err
    want, got = dk.listing(original), dk.listing(target)
    assert got.entries == want.entries
    assert got.links == want.links

    again = tmp_path / "again.tar.zst"
    assert voltool("export", imported["id"], "-o", str(again)).code == 0
    assert _export_manifest(again) == _export_manifest(path)
    assert voltool("delete", "--yes", imported["id"]).code == 0
    assert store not in _volumes(dk)
    assert dk.managed_containers() == []


def test_a_format_1_export_and_a_plain_tar_import_into_a_store_beside_its_snapshots(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    home = volume("echo mine > /v/mine")
    first = snapshot_record(home, env=F2)
    source = volume(SMALL_TREE)
    old = snapshot_record(source, env=F1)
    assert old["volume"] == f"voltool-snap-{old['id']}"
    path = tmp_path / "f1.tar.gz"
    assert voltool("export", old["id"], "-o", str(path)).code == 0

    r = voltool("import", str(path), "--json", "--volume", home, "--name", "from-f1", env=F2)
    assert r.code == 0, r.err
    (from_f1,) = records(r.out)
    assert from_f1["volume"] == f"voltool-store-{home}" and from_f1["name"] == "from-f1"
    assert from_f1["origin_id"] == old["id"]
    plain = tmp_path / "plain.tar"
    plain.write_bytes(make_tar([d("./", mode=0o700), f("./a", b"alpha"), sym("./l", "a")]))
    r = voltool("import", str(plain), "--json", "--volume", home, env=F2)
    assert r.code == 0, r.err
    (from_tar,) = records(r.out)
    assert from_tar["volume"] == f"voltool-store-{home}" and from_tar["origin_id"] is None

    listed = {s["id"]: s for s in _listed(home)}
    assert set(listed) == {first["id"], from_f1["id"], from_tar["id"]}
    assert {s["state"] for s in listed.values()} == {"complete"}
    assert _temporary(dk, home) == []
    r = voltool("verify", first["id"], from_f1["id"], from_tar["id"])
    assert r.code == 0, r.err + r.out
    r = voltool("ls", from_tar["id"], "--json")
    assert r.code == 0, r.err
    assert {e["path"]: e["type"] for e in records(r.out)} == {"a": "file", "l": "symlink"}

    target = volume()
    r = voltool("restore", from_f1["id"], "--to", target, "--yes", "--no-safety-snapshot")
    assert r.code == 0, r.err
    want, got = dk.listing(source), dk.listing(target)
    assert got.entries == want.entries
    assert got.links == want.links
    assert dk.managed_containers() == []


_REFUSED = {c.id: c for c in CORPUS}


@pytest.mark.parametrize(
    "case",
    [
        _REFUSED["dot-dot"],
        _REFUSED["through-symlink"],
        _REFUSED["hard-link-outside"],
        _REFUSED["export-hash-lies"],
        _REFUSED["export-extra-entry"],
        Case(
            "bomb",
            lambda: gzip_bomb(64 << 20),
            "more than 1048576 bytes",
            args=("--max-bytes", "1M"),
        ),
    ],
    ids=lambda c: c.id,
)
def test_a_hostile_archive_is_refused_and_leaves_the_store_as_it_was(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path, case: Case
) -> None:
    home = volume("echo mine > /v/mine")
    first = snapshot_record(home, env=F2)
    bare = volume()  # no store: none may be left
    path = tmp_path / "hostile"
    path.write_bytes(case.build())
    for vol in (home, bare):
        r = voltool("import", str(path), "--volume", vol, *case.args, env=F2)
        assert r.code == case.code == 6, r.err
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and case.message in lines[0], r.err
        assert _temporary(dk, vol) == []
        assert dk.managed_containers() == []
    assert _store_holds(dk, home) == [first["id"]]
    assert _store_holds(dk, bare) is None
    assert [s["id"] for s in _listed(home)] == [first["id"]]
    assert voltool("verify", first["id"]).code == 0
    assert voltool("recover", home).out.strip() == "nothing to recover"


def test_a_volume_in_the_way_of_the_store_is_left_alone(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    home = volume("echo mine > /v/mine")
    # Someone's own volume with the store's name: not voltool's (no store role), and
    # empty, so a cleanup that took it for an empty store would remove it.
    in_the_way = f"voltool-store-{home}"
    dk.client.volumes.create(in_the_way, labels={"io.voltool.snapshot.source": home})
    path = tmp_path / "plain.tar"
    path.write_bytes(make_tar([d("./"), f("./a", b"alpha")]))
    r = voltool("import", str(path), "--volume", home, env=F2)
    assert r.code == 5, r.err
    assert "is in the way of the store" in r.err
    assert dk.managed_containers() == []
    assert voltool("snapshot", home, env=F2).code == 5
    assert in_the_way in _volumes(dk)
    assert _temporary(dk, home) == []
    assert dk.managed_containers() == []


def _claims(size: int) -> bytes:
    """An export whose metadata, consistent with itself, claims a file of `size` bytes."""
    built = ManifestBuilder()
    built.add(ManifestEntry(".", "dir", 0o755, 0, 0))
    built.add(ManifestEntry("huge", "file", 0o644, 0, 0, size=size, sha256="0" * 64))
    m = built.build()
    info = {"entries": len(m), "bytes": m.content_bytes(), "tree_digest": m.digest()}
    return make_export(replace={MANIFEST: b"".join(m.lines())}, info=info)


def test_an_import_that_cannot_fit_is_refused_before_it_streams(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    bare = volume()
    path = tmp_path / "huge.tar"
    path.write_bytes(_claims(2**49))
    r = voltool("import", str(path), "--volume", bare, "--max-bytes", "1P", env=F2)
    assert r.code == 7, r.err
    assert "not enough space to import" in r.err
    assert _store_holds(dk, bare) is None and _temporary(dk, bare) == []
    assert dk.managed_containers() == []


def _big_export() -> bytes:
    """An export of more than 16 MiB (the mid-stream hold point) in a few files."""
    return make_export(
        [d("./"), f("./big", os.urandom(20 << 20)), f("./a", b"alpha"), f("./b", b"beta")]
    )


def _held_agent(dk: Docker, agent: str, store: str) -> bool:
    """True once the agent that copies into `store` has copied a file and stopped there."""
    return any(
        any(m.get("Name") == store for m in c.attrs["Mounts"])
        and c.attrs["Config"]["Image"] == agent
        and b'"event": "held"' in c.logs(stdout=False, stderr=True)
        for c in dk.client.containers.list(filters={"label": "io.voltool.role=helper"})
    )


def _start_held(
    dk: Docker, agent: str, path: Path, home: str, step: str, hold: Path
) -> subprocess.Popen[str]:
    """`voltool import` (format 2) into `home`'s store, stopped at `step`."""
    if step.startswith("agent-"):
        env = {**F2, "VOLTOOL_TEST_HOLD_AT": step}
        proc = start_voltool("import", str(path), "--volume", home, env=env)
        wait_for(lambda: _held_agent(dk, agent, f"voltool-store-{home}"), 120, "the agent")
    else:
        proc = start_voltool(
            "import", str(path), "--volume", home, env={**F2, **hold_env(step, hold)}
        )
        wait_for(hold.exists, 120, f"the import to reach {step}")
    return proc


def _as_it_was(dk: Docker, home: str, before: list[str]) -> None:
    """`home`'s store holds what it held (`before`: its snapshots' ids), and nothing else
    is left: no temporary volume, no helper, lock or record, nothing to recover."""
    if before:
        assert _store_holds(dk, home) == before
        assert [s["id"] for s in _listed(home)] == before
        assert voltool("verify", *before).code == 0
    else:
        assert _store_holds(dk, home) is None
        assert _listed(home) == []
    assert _temporary(dk, home) == []
    assert dk.managed_containers() == []
    assert voltool("recover", home).out.strip() == "nothing to recover"


# (step, whether the store is there before): the store as it was, made or not.
_STEPS = [
    ("begin", False),
    ("stream", False),
    ("importing-data", True),
    ("agent-copied-a-file", True),
    ("copied", False),
    ("checked", True),
]


@pytest.mark.parametrize(("step", "had_store"), _STEPS, ids=[s for s, _ in _STEPS])
def test_an_import_into_a_store_killed_before_its_commit_leaves_it_as_it_was(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path, step: str, had_store: bool
) -> None:
    home = volume("echo mine > /v/mine")
    before = [snapshot_record(home, env=F2)["id"]] if had_store else []
    path = tmp_path / "big.tar"
    path.write_bytes(_big_export())
    proc = _start_held(dk, agent, path, home, step, tmp_path / "hold")
    # Whatever it made so far, nothing of it is listed as complete.
    made = [s for s in _listed(home) if s["id"] not in before]
    assert all(s["state"] == "incomplete" for s in made), made
    proc.kill()
    proc.wait(30)
    r = voltool("recover", home)
    assert r.code == 0, r.err
    _as_it_was(dk, home, before)


def test_an_import_into_a_store_killed_once_committed_is_complete(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    home = volume()
    path = tmp_path / "big.tar"
    path.write_bytes(_big_export())
    hold = tmp_path / "hold"
    proc = _start_held(dk, agent, path, home, "committed", hold)
    proc.kill()
    proc.wait(30)
    (imported,) = _listed(home)
    assert imported["state"] == "complete" and imported["volume"] == f"voltool-store-{home}"
    assert _temporary(dk, home) == []  # it went before the commit
    r = voltool("recover", home)
    assert r.code == 0, r.err
    assert "remove" not in r.out
    assert [s["id"] for s in _listed(home)] == [imported["id"]]
    assert voltool("verify", imported["id"]).code == 0
    assert dk.managed_containers() == []


@pytest.mark.parametrize("step", ["importing-data", "copied", "checked"])
def test_an_import_into_a_store_interrupted_removes_what_it_made(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path, step: str
) -> None:
    home = volume("echo mine > /v/mine")
    before = [snapshot_record(home, env=F2)["id"]]
    path = tmp_path / "big.tar"
    path.write_bytes(_big_export())
    proc = _start_held(dk, agent, path, home, step, tmp_path / "hold")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    _as_it_was(dk, home, before)
