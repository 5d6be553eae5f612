"""Snapshots against the real engine: the copy is exact, the manifest tells the truth."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.dockertools import FIDELITY_SCRIPT, Docker, in_snapshot, records, voltool

pytestmark = pytest.mark.engine


def snapshot(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    r = voltool("snapshot", "--json", *args, env=env)
    assert r.code == 0, r.err
    (record,) = records(r.out)
    return record  # type: ignore[no-any-return]


@pytest.mark.parametrize("fmt", ["2", "1"], ids=["format-2", "format-1"])
def test_snapshot_data_equals_the_source_exactly(
    dk: Docker, volume: Callable[..., str], fmt: str
) -> None:
    src = volume(FIDELITY_SCRIPT)
    rec = snapshot(src, env={"VOLTOOL_FORMAT": fmt})
    original = dk.listing(src)
    copy = dk.listing(str(rec["volume"]), in_snapshot(rec, "data"))
    assert len(original.entries) == 29  # the FIDELITY_SCRIPT tree, every entry counted
    assert copy.entries == original.entries
    assert copy.links == original.links and len(original.links) == 3
    root = original.entries["."]
    assert (root.mode, root.uid, root.gid) == (0o750, 7, 8)
    assert original.entries["suid-hardlink"].mode == 0o4755
    assert rec["state"] == "complete" and rec["entries"] == len(original.entries)


@pytest.mark.parametrize("fmt", ["2", "1"], ids=["format-2", "format-1"])
def test_manifest_matches_an_independent_listing(
    dk: Docker, volume: Callable[..., str], fmt: str
) -> None:
    src = volume(FIDELITY_SCRIPT)
    rec = snapshot(src, env={"VOLTOOL_FORMAT": fmt})
    listing = dk.listing(src)
    lines = dk.manifest(str(rec["volume"]), in_snapshot(rec, "manifest.jsonl"))
    manifest = {e["path"]: e for e in lines}
    assert set(manifest) == set(listing.entries)
    for path, want in listing.entries.items():
        got = manifest[path]
        assert (got["type"], got["mode"], got["uid"], got["gid"]) == (
            want.type,
            want.mode,
            want.uid,
            want.gid,
        ), path
        # Format 2 keeps nanoseconds, and sizes of files only.
        mtime = got["mtime"] if fmt == "1" else got["mtime_ns"] // 10**9
        assert mtime == want.mtime, path
        assert got.get("sha256") == want.sha256, path
        assert got.get("target") == want.target, path
        assert got.get("size", 0) == want.size, path
    groups = {}
    for e in manifest.values():
        if "link" in e:
            # Format 2 names the group's first entry, which carries no link itself.
            groups.setdefault(e["link"], {e["link"]} if fmt == "2" else set()).add(e["path"])
    assert {frozenset(g) for g in groups.values()} == set(listing.links)
    assert rec["bytes"] == sum(
        e.size
        for p, e in listing.entries.items()
        if p not in ("big-hardlink", "suid-hardlink", "deep-hardlink")
    )


def test_same_tree_same_digest_and_one_byte_changes_it(
    dk: Docker, volume: Callable[..., str]
) -> None:
    src = volume(FIDELITY_SCRIPT)
    first = snapshot(src)
    second = snapshot(src)
    assert first["tree_digest"] == second["tree_digest"] and first["id"] != second["id"]
    dk.run({src: "/v"}, "printf X | dd of=/v/big.bin bs=1 seek=4096 conv=notrunc 2>/dev/null")
    third = snapshot(src)
    assert third["tree_digest"] != first["tree_digest"]


def test_a_copy_of_the_tree_in_another_volume_has_the_same_digest(
    dk: Docker, volume: Callable[..., str]
) -> None:
    a = volume(FIDELITY_SCRIPT)
    b = volume()
    dk.run({a: "/a", b: "/b"}, "cd /a && tar -cf - . | tar -C /b -xpf -")
    assert snapshot(a)["tree_digest"] == snapshot(b)["tree_digest"]


def test_empty_volume(dk: Docker, volume: Callable[..., str]) -> None:
    rec = snapshot(volume())
    assert rec["entries"] == 1 and rec["bytes"] == 0
    manifest = dk.manifest(str(rec["volume"]), in_snapshot(rec, "manifest.jsonl"))
    assert [e["path"] for e in manifest] == ["."]


def test_several_volumes_and_compose_project(dk: Docker, volume: Callable[..., str]) -> None:
    a = volume("echo a > /v/a", labels={"com.docker.compose.project": "vtproj"})
    b = volume("echo b > /v/b", labels={"com.docker.compose.project": "vtproj"})
    r = voltool(
        "snapshot", "--json", "--project", "vtproj", "--name", "pre-upgrade", "--note", "before v2"
    )
    assert r.code == 0, r.err
    made = records(r.out)
    assert sorted(m["source"] for m in made) == sorted([a, b])
    assert {m["name"] for m in made} == {"pre-upgrade"} and {m["note"] for m in made} == {
        "before v2"
    }
    again = voltool("snapshot", a, "--name", "pre-upgrade")
    assert again.code == 2 and "already has a snapshot named 'pre-upgrade'" in again.err
