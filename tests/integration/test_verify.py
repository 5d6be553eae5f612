"""verify reads a snapshot back and reports every difference from its manifest."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.integration.dockertools import SMALL_TREE, Docker, in_snapshot, records, voltool

pytestmark = pytest.mark.engine


def snap(vol: str) -> dict[str, object]:
    r = voltool("snapshot", "--json", vol)
    assert r.code == 0, r.err
    return records(r.out)[0]  # type: ignore[no-any-return]


def test_a_clean_snapshot_passes(volume: Callable[..., str]) -> None:
    s = snap(volume(SMALL_TREE))
    r = voltool("verify", str(s["id"]))
    assert r.code == 0, r.err
    assert r.out.startswith(f"ok    {s['id']}") and f"({s['entries']} entries)" in r.out


@pytest.mark.parametrize(
    ("tamper", "expect"),
    [
        # one byte flipped, mtime kept: only the content hash tells
        (
            "t=$(stat -c %Y a.txt); printf X | dd of=a.txt bs=1 seek=0 conv=notrunc; "
            "touch -d @$t a.txt",
            {"altered": [{"path": "a.txt", "fields": ["sha256"]}]},
        ),
        ("rm dir/sub/c.txt", {"missing": ["dir/sub/c.txt"]}),
        ("echo new > added", {"extra": ["added"]}),
        (
            "chmod 600 dir/b.txt",
            {
                "altered": [
                    {"path": "dir/b.txt", "fields": ["mode"]},
                    {"path": "hard", "fields": ["mode"]},
                ]
            },
        ),
    ],
    ids=["byte-flipped", "file-deleted", "file-added", "mode-changed"],
)
def test_each_kind_of_damage_is_reported(
    dk: Docker, volume: Callable[..., str], tamper: str, expect: dict[str, object]
) -> None:
    s = snap(volume(SMALL_TREE))
    other = snap(volume("echo fine > /v/f"))
    dk.run({str(s["volume"]): "/s"}, f'cd "/s/$1" && {tamper}', in_snapshot(s, "data"))
    r = voltool("verify", "--json", str(s["id"]), str(other["id"]))
    assert r.code == 6, r.err
    reports = {x["id"]: x for x in records(r.out)}
    assert reports[other["id"]]["ok"] is True
    bad = reports[s["id"]]
    assert bad["ok"] is False
    # Adding or removing an entry also changes its directory's mtime: set aside.
    altered = [
        {"path": a["path"], "fields": [f for f in a["fields"] if f != "mtime"]}
        for a in bad["altered"]
    ]
    assert [a for a in altered if a["fields"]] == expect.get("altered", [])
    assert bad["missing"] == expect.get("missing", [])
    assert bad["extra"] == expect.get("extra", [])
    assert bad["counts"] == {k: len(bad[k]) for k in ("missing", "extra", "altered")}
    # The table, for people (the engine may hold others' snapshots: name the two).
    text = voltool("verify", str(s["id"]), str(other["id"]))
    assert text.code == 6 and f"FAIL  {s['id']}" in text.out


def test_verify_needs_a_target() -> None:
    assert voltool("verify").code == 2


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("kind", 's/"kind": "manual"/"kind": "import"/'),
        ("created", 's/"created": "[0-9]\\{4\\}/"created": "2001/'),
    ],
)
def test_a_snapshot_json_that_disagrees_with_the_labels_is_damaged(
    dk: Docker, volume: Callable[..., str], field: str, edit: str
) -> None:
    vol = volume("echo fine > /v/f")
    s = snap(vol)
    sid = str(s["id"])
    where, path = str(s["volume"]), in_snapshot(s, "snapshot.json")
    before = dk.read(where, path)
    dk.run({where: "/s"}, f"sed -i '{edit}' \"/s/$1\"", path)
    assert dk.read(where, path) != before
    r = voltool("verify", sid)
    assert r.code == 6, r.err
    assert f"FAIL  {sid}" in r.out
    said = f"snapshot.json disagrees with its store's begun.json on {field}:"
    assert said in r.out
    listed = {x["id"]: x for x in records(voltool("list", vol, "--json").out)}
    assert listed[sid]["state"] == "damaged"
    restored = voltool("restore", sid, "--dry-run")
    assert restored.code == 6, restored.err
    assert said in restored.err
