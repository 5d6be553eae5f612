"""Stored (format-2) snapshots leaving and entering stores: export, import, migrate."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dockertools import (
    F1,
    F2,
    FIDELITY_SCRIPT,
    Docker,
    hold_env,
    records,
    snapshot_record,
    start_voltool,
    voltool,
    wait_for,
)

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
    files = tmp_path / "files"
    files.mkdir()
    r = voltool("export", made["id"], "-o", str(files / "out.tar.zst"))
    assert r.code == 6, r.err
    assert "does not match" in r.err
    assert list(files.iterdir()) == []
    assert dk.managed_containers() == []


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
