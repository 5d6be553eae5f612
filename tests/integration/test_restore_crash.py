"""SIGKILL a real restore at each journaled step; recover must leave the volume whole.

Before the swap the volume must be exactly as it was; from the swap on it must
be exactly the snapshot, with the old data kept as a pre-restore snapshot.

Restores of stored snapshots (format 2, the default) are killed at every step.
Format 1 is killed where its restore differs: staging (through the archive API)
and keeping the old data (a snapshot volume); a format-1 snapshot restored with
format 2 the default, where its old data goes into the store.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dockertools import (
    CHANGES,
    F1,
    IDLE_APP,
    SMALL_TREE,
    Docker,
    Listing,
    hold_env,
    in_snapshot,
    records,
    start_voltool,
    voltool,
    wait_for,
)

pytestmark = pytest.mark.engine

ROLLED_BACK = ["begin", "stage", "staged", "stop"]
# "copied": the old data is in the store, not yet committed (format 2); "stream": the
# snapshot volume that keeps it is being filled (format 1).
ROLLED_FORWARD = ["swap", "swapped", "start", "started", "save", "copied", "saved", "cleanup"]
# Where format 1's restore is its own: staging through the archive API, the old data
# kept in a snapshot volume.
ROLLED_BACK_1 = ["stage", "staged"]
ROLLED_FORWARD_1 = ["save", "stream", "saved"]

# (how the snapshot is taken, how the restore runs): format 2 throughout (the default),
# format 1 throughout, and a format-1 snapshot restored with format 2 the default (an
# upgrade): its old data goes into the store.
FORMATS = {"2": ({}, {}), "1": (F1, F1), "1-then-2": (F1, {})}


@dataclass
class Scene:
    volume: str
    app: str
    snapshot: dict[str, object]
    snapshot_tree: Listing
    current_tree: Listing
    env: dict[str, str]  # the restore's environment: its format


@pytest.fixture(params=["2"])
def scene(
    request: pytest.FixtureRequest,
    dk: Docker,
    volume: Callable[..., str],
    container: Callable[..., str],
) -> Scene:
    """A volume with a snapshot (in the format the test's parameter names), changed since,
    and an application using it."""
    taken, restored = FORMATS[request.param]
    vol = volume(SMALL_TREE)
    snapshot_tree = dk.listing(vol)
    r = voltool("snapshot", "--json", vol, env=taken)
    assert r.code == 0, r.err
    dk.run({vol: "/v"}, CHANGES)
    app = container([vol], IDLE_APP)
    return Scene(vol, app, records(r.out)[0], snapshot_tree, dk.listing(vol), restored)


def kill_at(step: str, scene: Scene, tmp_path: Path) -> str:
    """Run a restore, SIGKILL it right after it journals `step`; returns the op id."""
    hold = tmp_path / f"hold-{step}"
    proc = start_voltool(
        "restore", "--yes", str(scene.snapshot["id"]), env={**scene.env, **hold_env(step, hold)}
    )
    wait_for(hold.exists, timeout=120, what=f"the restore to reach {step}")
    proc.kill()
    proc.wait(30)
    return last_op()


def last_op() -> str:
    journal = Path(os.environ["VOLTOOL_STATE_DIR"]) / "journal.jsonl"
    ops = [json.loads(line) for line in journal.read_text().splitlines()]
    return str([r for r in ops if r.get("kind") == "restore"][-1]["op"])


def begin_record(op: str) -> dict[str, object]:
    journal = Path(os.environ["VOLTOOL_STATE_DIR"]) / "journal.jsonl"
    for line in journal.read_text().splitlines():
        rec = json.loads(line)
        if rec["op"] == op and rec["step"] == "begin":
            return rec  # type: ignore[no-any-return]
    raise AssertionError(f"no begin record for {op}")


def elsewhere(tmp_path: Path) -> dict[str, str]:
    """What another user, another $HOME or another host has: none of our local state."""
    other = tmp_path / f"elsewhere-{len(list(tmp_path.glob('elsewhere-*')))}"
    return {"VOLTOOL_STATE_DIR": str(other)}


def recover_and_check(dk: Docker, scene: Scene, forward: bool, op: str) -> None:
    env = elsewhere(Path(os.environ["VOLTOOL_STATE_DIR"]).parent)
    dry = voltool("recover", scene.volume, "--dry-run", env=env)
    assert dry.code == 0, dry.err
    r = voltool("recover", scene.volume, env=env)
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    # Exactly what the dry run said, each once, in the same order.
    assert r.out.splitlines() == [line.removeprefix("would ") for line in dry.out.splitlines()]
    assert f"mark operation {op} recovered" in r.out
    want = scene.snapshot_tree if forward else scene.current_tree
    got = dk.listing(scene.volume)
    assert got.entries == want.entries  # exact: no staging, old or marker entry either
    assert got.links == want.links
    assert dk.status(scene.app) == "running"
    assert dk.managed_containers() == []
    again = voltool("recover", scene.volume)
    assert (again.code, again.out.strip()) == (0, "nothing to recover")
    pre = [
        s
        for s in records(voltool("list", "--json", scene.volume).out)
        if s["kind"] == "pre-restore"
    ]
    if forward:
        (kept,) = pre
        assert kept["state"] == "complete"
        # In the restore's format: the format-1 snapshot volume, or the target's store.
        want_store = scene.env.get("VOLTOOL_FORMAT") != "1"
        assert str(kept["volume"]).startswith("voltool-store-") == want_store, kept
        old = dk.listing(str(kept["volume"]), in_snapshot(kept, "data"))
        assert old.entries == scene.current_tree.entries
    else:
        assert pre == []
    assert voltool("snapshot", scene.volume).code == 0  # nothing pending any more


def _steps(*by_format: tuple[str, list[str]]) -> list[Any]:
    return [
        pytest.param(fmt, step, id=f"format-{fmt}-{step}")
        for fmt, steps in by_format
        for step in steps
    ]


@pytest.mark.parametrize(
    ("scene", "step"), _steps(("2", ROLLED_BACK), ("1", ROLLED_BACK_1)), indirect=["scene"]
)
def test_killed_before_the_swap_rolls_back(
    dk: Docker, scene: Scene, tmp_path: Path, step: str
) -> None:
    op = kill_at(step, scene, tmp_path)
    recover_and_check(dk, scene, forward=False, op=op)


@pytest.mark.parametrize(
    ("scene", "step"),
    _steps(("2", ROLLED_FORWARD), ("1", ROLLED_FORWARD_1), ("1-then-2", ["save", "copied"])),
    indirect=["scene"],
)
def test_killed_from_the_swap_on_rolls_forward(
    dk: Docker, scene: Scene, tmp_path: Path, step: str
) -> None:
    op = kill_at(step, scene, tmp_path)
    recover_and_check(dk, scene, forward=True, op=op)


# Half-done swaps, as a swap script cut off in the middle of a phase leaves them.
HALF_PHASE_1 = r"""
cd /v
mkdir ".voltool-old-$1"
for e in a.txt added.txt; do mv "$e" ".voltool-old-$1/$e"; done
"""
HALF_PHASE_2 = r"""
cd /v
mkdir ".voltool-old-$1"
for e in * ".with space"; do
  case "$e" in .voltool-*) continue;; esac
  [ -e "$e" ] || [ -L "$e" ] || continue
  mv "$e" ".voltool-old-$1/$e"
done
touch -d "@$2" ".voltool-old-$1"  # phase 1 stamps the old root before its marker
: > ".voltool-swap-$1"
mv ".voltool-stage-$1/a.txt" a.txt
mv ".voltool-stage-$1/dir" dir
"""


@pytest.mark.parametrize("partial", [HALF_PHASE_1, HALF_PHASE_2], ids=["phase-1", "phase-2"])
def test_a_swap_cut_in_the_middle_is_finished(
    dk: Docker, scene: Scene, tmp_path: Path, partial: str
) -> None:
    op = kill_at("swap", scene, tmp_path)
    dk.run({scene.volume: "/v"}, partial, op, str(begin_record(op)["old_mtime"]))
    recover_and_check(dk, scene, forward=True, op=op)


def test_killed_mid_stream_rolls_back(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    # Format 1 streams through voltool (format 2's agent is killed mid-copy in test_store).
    vol = volume("head -c 67108864 /dev/zero > /v/big; echo x > /v/x")
    r = voltool("snapshot", "--json", vol, env=F1)
    assert r.code == 0, r.err
    snap = records(r.out)[0]
    dk.run({vol: "/v"}, "echo changed > /v/x; rm /v/big")
    app = container([vol], IDLE_APP)
    before = dk.listing(vol)
    hold = tmp_path / "hold"
    proc = start_voltool(
        "restore", "--yes", str(snap["id"]), env={**F1, **hold_env("staging-data", hold)}
    )
    wait_for(hold.exists, timeout=120, what="the restore to be mid-stream")
    staged = dk.run({vol: "/v"}, "ls -A /v")
    assert any(p.startswith(".voltool-stage-") for p in staged.split()), staged
    proc.kill()
    proc.wait(30)
    rec = voltool("recover", vol)
    assert rec.code == 0, rec.err
    assert dk.listing(vol).entries == before.entries
    assert dk.status(app) == "running"
    assert dk.managed_containers() == []


def test_two_recovers_at_once_finish_the_restore_once(
    dk: Docker, scene: Scene, tmp_path: Path
) -> None:
    op = kill_at("swap", scene, tmp_path)
    a = start_voltool("recover", scene.volume)
    b = start_voltool("recover", scene.volume)
    for proc in (a, b):
        code = proc.wait(120)
        assert code == 0, proc.stderr.read() if proc.stderr else ""
    dk.run({scene.volume: "/v"}, "echo after > /v/written-after")
    assert voltool("recover", scene.volume).out.strip() == "nothing to recover"
    got = dk.listing(scene.volume).entries
    assert "written-after" in got
    assert {k: v for k, v in got.items() if k != "written-after" and k != "."} == {
        k: v for k, v in scene.snapshot_tree.entries.items() if k != "."
    }
    assert op  # the killed restore's op was recovered, not replayed


def test_ctrl_c_during_the_swap_is_held_until_it_is_whole(
    dk: Docker, scene: Scene, tmp_path: Path
) -> None:
    import signal

    hold = tmp_path / "hold"
    proc = start_voltool("restore", "--yes", str(scene.snapshot["id"]), env=hold_env("swap", hold))
    wait_for(hold.exists, timeout=120, what="the swap step")
    proc.send_signal(signal.SIGINT)  # arrives inside the held section
    hold.unlink()
    assert proc.wait(120) == 130
    # The swap completed and the app runs on the whole restored tree ...
    assert dk.status(scene.app) == "running"
    listing = dk.listing(scene.volume).entries
    restored = {k: v for k, v in listing.items() if not k.startswith(".voltool-") and k != "."}
    assert restored == {k: v for k, v in scene.snapshot_tree.entries.items() if k != "."}
    # ... and recover keeps the old data and cleans up.
    recover_and_check(dk, scene, forward=True, op=last_op())


def test_a_killed_restore_into_a_created_volume_removes_it(
    dk: Docker, scene: Scene, tmp_path: Path
) -> None:
    fresh = f"{scene.volume}-new"
    hold = tmp_path / "hold"
    proc = start_voltool(
        "restore",
        "--yes",
        str(scene.snapshot["id"]),
        "--to",
        fresh,
        "--create",
        env=hold_env("staged", hold),
    )
    wait_for(hold.exists, timeout=120, what="staging into the new volume")
    proc.kill()
    proc.wait(30)
    assert dk.client.volumes.list(filters={"name": fresh})
    assert voltool("recover", fresh).code == 0
    assert [
        v.name for v in dk.client.volumes.list(filters={"name": fresh}) if v.name == fresh
    ] == []
    assert dk.snapshot_volumes(fresh) == []
    assert dk.managed_containers() == []


@pytest.mark.parametrize("scene", ["2", "1"], indirect=True, ids=["format-2", "format-1"])
def test_a_damaged_partial_pre_restore_snapshot_is_made_again(
    dk: Docker, scene: Scene, tmp_path: Path
) -> None:
    op = kill_at("save", scene, tmp_path)
    safety = str(begin_record(op)["safety"])
    # As a commit cut short would leave it: there, with a truncated snapshot.json.
    if scene.env == F1:
        dk.fake_snapshot_volume(safety, scene.volume, "pre-restore")
        where, path = f"voltool-snap-{safety}", "/s"
    else:  # a directory of the target's store, which the restore made sure of
        where, path = f"voltool-store-{scene.volume}", f"/s/snapshots/{safety}"
    dk.run(
        {where: "/s"},
        'mkdir -p "$1/data" && printf \'{"format": 1, "id\' > "$1/snapshot.json"',
        path,
    )
    listed = {s["id"]: s for s in records(voltool("list", "--json", scene.volume).out)}
    assert listed[safety]["state"] == "damaged"
    recover_and_check(dk, scene, forward=True, op=op)
