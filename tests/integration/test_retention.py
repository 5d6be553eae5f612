"""Prune, pin, unpin and edit against the real engine."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.dockertools import Docker, records, start_voltool, voltool

pytestmark = pytest.mark.engine
UTC = {"TZ": "UTC"}

# A fixed noon, safely in the past, and snapshots at known distances before it.
BASE = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).replace(
    hour=12, minute=0, second=0, microsecond=0
)
AGES = {
    "a": dt.timedelta(0),
    "b": dt.timedelta(hours=1),
    "c": dt.timedelta(days=1),
    "d": dt.timedelta(days=2),
    "e": dt.timedelta(days=9),
    "f": dt.timedelta(days=40),
    "g": dt.timedelta(days=400),
}


def newest_of_months(n: int) -> set[str]:
    """The letters monthly N keeps: the newest snapshot of each of the N newest months."""
    months: dict[tuple[int, int], str] = {}
    for letter, age in sorted(AGES.items(), key=lambda kv: kv[1]):
        t = BASE - age
        months.setdefault((t.year, t.month), letter)
    return set(list(months.values())[:n])


# Snapshot volume names are global to the engine: ids unique to each test, so that
# tests (of this run, of others sharing the engine, or in parallel) never meet.
RUN = ""


@pytest.fixture(autouse=True)
def unique_ids() -> None:
    global RUN
    RUN = uuid.uuid4().hex[:8]


def sid(letter: str) -> str:
    return f"{RUN}{ord(letter):08x}"


@pytest.fixture
def seven(dk: Docker, volume: Callable[..., str]) -> str:
    """A volume with seven snapshots in its store (format 2), of the ages AGES says."""
    vol = volume()
    for letter, age in AGES.items():
        dk.fake_stored_snapshot(sid(letter), vol, (BASE - age).isoformat())
    return vol


def remaining(dk: Docker, vol: str) -> set[str]:
    ids = dk.snapshot_ids(vol)
    return {letter for letter in AGES if sid(letter) in ids}


@pytest.mark.parametrize(
    ("options", "kept"),
    [
        (["--keep-last", "2"], {"a", "b"}),
        (["--keep-hourly", "2"], {"a", "b"}),
        (["--keep-daily", "2"], {"a", "c"}),
        (["--keep-weekly", "1"], {"a"}),
        (["--keep-monthly", "2"], newest_of_months(2)),
        (["--keep-yearly", "1"], {"a"}),
        (["--keep-within", "3d"], {"a", "b", "c", "d"}),
    ],
)
def test_each_rule_removes_exactly_what_it_should(
    dk: Docker, seven: str, options: list[str], kept: set[str]
) -> None:
    r = voltool("prune", seven, "--yes", "--json", *options, env=UTC)
    assert r.code == 0, r.err
    assert remaining(dk, seven) == kept
    plan = {p["id"]: p for p in records(r.out)}
    assert {p["id"] for p in plan.values() if p["action"] == "keep"} == {sid(x) for x in kept}
    assert all(p["reasons"] for p in plan.values() if p["action"] == "keep")
    assert all(p["removed"] for p in plan.values() if p["action"] == "remove")


def test_pinned_survive_and_dry_run_removes_nothing(dk: Docker, seven: str) -> None:
    assert voltool("pin", sid("g")).code == 0
    dry = voltool("prune", seven, "--keep-last", "1", "--dry-run", env=UTC)
    assert dry.code == 0 and "pinned" in dry.out and "remove" in dry.out
    assert remaining(dk, seven) == set(AGES)
    assert voltool("prune", seven, "--keep-last", "1", "--yes", env=UTC).code == 0
    assert remaining(dk, seven) == {"a", "g"}
    assert voltool("delete", "--yes", sid("g")).code == 5


def test_no_policy_refuses_and_no_terminal_needs_yes(dk: Docker, seven: str) -> None:
    r = voltool("prune", seven)
    assert r.code == 2 and "prune needs a policy" in r.err
    r = voltool("prune", seven, "--keep-last", "1")
    assert r.code == 11
    assert remaining(dk, seven) == set(AGES)


def test_pre_restore_default_policy_and_incomplete(dk: Docker, volume: Callable[..., str]) -> None:
    # Both formats side by side, as after an upgrade: one policy over all of them.
    vol = volume()
    now = dt.datetime.now(dt.UTC)
    # The default: last 3, and within 7 days of the newest (10 days old): 10, 11, 12 stay.
    for i, days in enumerate((10, 11, 12, 20, 21)):
        fake = dk.fake_stored_snapshot if i % 2 else dk.fake_complete_snapshot
        fake(f"{RUN}{i:08x}", vol, (now - dt.timedelta(days=days)).isoformat(), "pre-restore")
    dk.fake_stored_snapshot(sid("e"), vol, (now - dt.timedelta(days=30)).isoformat())
    dk.fake_snapshot_volume(sid("f"), vol)  # created 2026-01-01, incomplete
    dk.fake_stored_snapshot(sid("g"), vol, complete=False)  # the same, in the store
    r = voltool("prune", vol, "--keep-last", "5", "--yes", "--json", env=UTC)
    assert r.code == 0, r.err
    assert dk.snapshot_ids(vol) == {f"{RUN}{i:08x}" for i in range(3)} | {sid("e")}
    reasons = {p["id"]: p["reasons"] for p in records(r.out)}
    assert reasons[sid("f")] == reasons[sid("g")] == ["incomplete for over an hour"]


def test_config_file_policy_and_config_show(dk: Docker, seven: str, tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[prune]\nkeep-last = 3\n[prune.volumes."{seven}"]\nkeep-daily = 1\n')
    env = {**UTC, "VOLTOOL_CONFIG": str(cfg)}
    shown = voltool("config", "show", env=env)
    assert shown.code == 0
    assert f"prune volume {seven}: daily 1  ([prune.volumes.{seven}] in {cfg})" in shown.out
    assert (
        "prune pre-restore: last 3, within 1w  (the default for pre-restore snapshots)" in shown.out
    )
    assert voltool("prune", seven, "--yes", env=env).code == 0
    assert remaining(dk, seven) == {"a"}


def test_pin_edit_and_etags(dk: Docker, seven: str) -> None:
    first = json.loads(voltool("inspect", "--json", sid("a")).out)
    stale = first["etag"]
    r = voltool(
        "edit",
        sid("a"),
        "--name",
        "nightly",
        "--note",
        "before upgrade",
        "--if-match",
        stale,
        "--json",
    )
    assert r.code == 0, r.err
    edited = json.loads(r.out)
    assert (edited["name"], edited["note"]) == ("nightly", "before upgrade") and edited[
        "etag"
    ] != stale
    listed = {s["id"]: s for s in records(voltool("list", "--json", seven).out)}
    assert listed[sid("a")]["etag"] == edited["etag"]
    refused = voltool("pin", sid("a"), "--if-match", stale)
    assert refused.code == 5 and "nothing was changed" in refused.err
    assert json.loads(voltool("inspect", "--json", sid("a")).out)["pinned"] is False
    dup = voltool("edit", sid("b"), "--name", "nightly")
    assert dup.code == 2 and "already has a snapshot named 'nightly'" in dup.err
    assert voltool("edit", sid("a"), "--name", "").code == 0
    assert json.loads(voltool("inspect", "--json", sid("a")).out)["name"] is None


def test_two_concurrent_edits_with_one_etag_one_wins(dk: Docker, seven: str) -> None:
    etag = json.loads(voltool("inspect", "--json", sid("c")).out)["etag"]
    procs = {
        note: start_voltool("edit", sid("c"), "--note", note, "--if-match", etag)
        for note in ("from-first", "from-second")
    }
    codes = {note: p.wait(120) for note, p in procs.items()}
    assert sorted(codes.values()) == [0, 5], codes
    winner = next(note for note, code in codes.items() if code == 0)
    meta = json.loads(dk.read(f"voltool-store-{seven}", f"snapshots/{sid('c')}/meta.json"))
    assert meta["note"] == winner
