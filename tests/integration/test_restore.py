"""Restore against the real engine: exact, all-or-nothing, guarded, and undoable."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.integration.dockertools import (
    CHANGES,
    F1,
    FIDELITY_SCRIPT,
    IDLE_APP,
    SMALL_TREE,
    Docker,
    Result,
    hold_env,
    in_snapshot,
    records,
    snapshot_record,
    start_voltool,
    voltool,
    wait_for,
)

pytestmark = pytest.mark.engine


# Edit, add, delete, a directory into a file, a file into a symlink, the root's mode and owner.
FIDELITY_CHANGES = r"""
set -e
cd /v
echo edited > small.txt
echo added > added.txt
rm big.bin
rm -rf dir/nested/deeper; printf file > dir/nested/deeper
rm owned; ln -s small.txt owned
chmod 755 /v; chown 0:0 /v
"""


def snap(vol: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return snapshot_record(vol, env=env)


def restore(*args: str, env: dict[str, str] | None = None) -> Result:
    return voltool("restore", *args, env=env)


def no_private_entries(dk: Docker, vol: str) -> bool:
    return not any(p.startswith(".voltool-") for p in dk.listing(vol).entries)


def test_round_trip_restores_the_exact_tree_and_keeps_the_old_one(
    dk: Docker, volume: Callable[..., str]
) -> None:
    vol = volume(FIDELITY_SCRIPT)
    original = dk.listing(vol)
    s = snap(vol)
    dk.run({vol: "/v"}, FIDELITY_CHANGES)
    changed = dk.listing(vol)
    assert changed.entries != original.entries

    r = restore("--yes", "--json", str(s["id"]))
    assert r.code == 0, r.err
    result = json.loads(r.out)
    after = dk.listing(vol)
    assert after.entries == original.entries  # root mode, owner and mtime included
    assert after.links == original.links
    assert voltool("digest", vol).out.strip() == s["tree_digest"]

    # The old data was kept as a pre-restore snapshot: restoring it undoes the restore.
    pre = json.loads(voltool("inspect", "--json", result["pre_restore_snapshot"]).out)
    assert pre["kind"] == "pre-restore" and pre["source"] == vol and pre["state"] == "complete"
    assert (
        dk.listing(pre["volume"], in_snapshot(pre, "data")).entries.keys() == changed.entries.keys()
    )
    undo = restore("--yes", result["pre_restore_snapshot"])
    assert undo.code == 0, undo.err
    assert dk.listing(vol).entries == changed.entries
    assert dk.managed_containers() == []


def test_restore_into_another_and_a_new_volume(dk: Docker, volume: Callable[..., str]) -> None:
    src = volume(SMALL_TREE)
    s = snap(src)
    other = volume("echo unrelated > /v/x")
    assert restore("--yes", str(s["id"]), "--to", other).code == 0
    assert dk.listing(other).entries == dk.listing(src).entries
    fresh = f"{src}-new"
    missing = restore("--yes", str(s["id"]), "--to", fresh)
    assert missing.code == 3 and "--create" in missing.err
    try:
        r = restore("--yes", "--json", str(s["id"]), "--to", fresh, "--create")
        assert r.code == 0, r.err
        assert dk.listing(fresh).entries == dk.listing(src).entries
        assert json.loads(r.out)["pre_restore_snapshot"] is None  # nothing was there to keep
        assert dk.snapshot_volumes(fresh) == []
    finally:
        for snap_volume in dk.snapshot_volumes(fresh):
            dk.client.volumes.get(snap_volume).remove(force=True)
        dk.client.volumes.get(fresh).remove(force=True)
    assert restore("--yes", str(s["id"]), "--create").code == 2


def test_never_into_a_snapshot_volume(volume: Callable[..., str]) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    r = restore("--yes", str(s["id"]), "--to", str(s["volume"]))
    assert r.code == 2 and "snapshot volume" in r.err


# What a damaged snapshot's restore says: format 1 names the entry as it streams by;
# format 2 holds the whole staged copy to the snapshot's tree digest.
DAMAGED = {
    "1": "'dir/sub/c.txt' does not match its manifest (content differs)",
    "2": "does not match its manifest: what was copied out of its store has another tree digest",
}


@pytest.mark.parametrize("fmt", ["2", "1"], ids=["format-2", "format-1"])
def test_corrupt_snapshot_fails_in_staging_and_leaves_the_target(
    dk: Docker, volume: Callable[..., str], fmt: str
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol, env={"VOLTOOL_FORMAT": fmt})
    dk.run({vol: "/v"}, CHANGES)
    before = dk.listing(vol)
    # One byte flipped and the mtime kept, as bit rot would: only the hash can tell.
    dk.run(
        {str(s["volume"]): "/s"},
        'f="/s/$1/dir/sub/c.txt"; t=$(stat -c %Y "$f"); '
        'printf X | dd of="$f" bs=1 seek=1 conv=notrunc; touch -d "@$t" "$f"',
        in_snapshot(s, "data"),
    )
    r = restore("--yes", str(s["id"]))
    assert r.code == 6, r.err
    assert DAMAGED[fmt] in r.err
    assert dk.listing(vol).entries == before.entries
    assert dk.managed_containers() == []
    again = restore("--yes", str(s["id"]))  # nothing pending: a clean failure
    assert again.code == 6


@pytest.mark.parametrize("fmt", ["2", "1"], ids=["format-2", "format-1"])
@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        # An absolute symlink, and manifest entries that would be written through it.
        (
            'ln -s / data/evil && printf \'{"gid":0,"mode":420,"mtime":0,"path":"evil/x",'
            '"sha256":"%s","size":0,"type":"file","uid":0}\\n{"gid":0,"mode":511,"mtime":0,'
            '"path":"evil","size":0,"target":"/","type":"symlink","uid":0}\\n\' '
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 >> manifest.jsonl",
            "manifest",
        ),
        # A file in data/ hard-linked to one outside it.
        ("ln snapshot.json data/sneaky", "manifest"),
        # A FIFO where the manifest has none.
        ("mkfifo data/pipe", "manifest"),
    ],
    ids=["symlink-out", "hard-link-out", "fifo"],
)
def test_tampered_snapshots_are_refused(
    dk: Docker, volume: Callable[..., str], tamper: str, message: str, fmt: str
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol, env={"VOLTOOL_FORMAT": fmt})
    dk.run({vol: "/v"}, CHANGES)
    before = dk.listing(vol)
    dk.run({str(s["volume"]): "/s"}, f'cd "/s/$1" && {tamper}', in_snapshot(s))
    r = restore("--yes", "--allow-special", str(s["id"]))
    assert r.code == 6, r.err
    assert message in r.err and "Traceback" not in r.err
    assert dk.listing(vol).entries == before.entries
    assert dk.managed_containers() == []


def test_if_match(dk: Docker, volume: Callable[..., str], container: Callable[..., str]) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    dk.run({vol: "/v"}, CHANGES)
    app = container([vol], IDLE_APP)
    current = voltool("digest", vol).out.strip()
    stale = str(s["tree_digest"])
    before = dk.listing(vol)
    r = restore("--yes", "--if-match", stale, str(s["id"]))
    assert r.code == 5 and f"its digest is {current}" in r.err
    assert dk.listing(vol).entries == before.entries
    assert dk.status(app) == "running"
    ok = restore("--yes", "--if-match", current, str(s["id"]))
    assert ok.code == 0, ok.err
    assert voltool("digest", vol).out.strip() == s["tree_digest"]
    assert dk.status(app) == "running"


def test_containers_keep_running_while_staging(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    app = container([vol], IDLE_APP)
    hold = tmp_path / "hold"
    proc = start_voltool("restore", "--yes", "--json", str(s["id"]), env=hold_env("staged", hold))
    wait_for(hold.exists, what="staging to finish")
    assert dk.status(app) == "running"  # staging happened with the app up
    hold.unlink()
    assert proc.wait(120) == 0
    result = json.loads(proc.stdout.read() if proc.stdout else "{}")
    assert result["restarted"] == [app]
    state = dk.client.api.inspect_container(app)["State"]
    assert state["Status"] == "running" and state["StartedAt"] > state["FinishedAt"]
    assert 0 <= result["downtime_seconds"] < 60


def test_offline_keeps_containers_stopped_during_staging(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    app = container([vol], IDLE_APP)
    hold = tmp_path / "hold"
    proc = start_voltool("restore", "--yes", "--offline", str(s["id"]), env=hold_env("stage", hold))
    wait_for(hold.exists, what="the stage step")
    assert dk.status(app) == "exited"
    hold.unlink()
    assert proc.wait(120) == 0
    assert dk.status(app) == "running"


def test_two_restores_at_once_one_is_busy(
    dk: Docker, volume: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    hold = tmp_path / "hold"
    first = start_voltool("restore", "--yes", str(s["id"]), env=hold_env("stage", hold))
    wait_for(hold.exists, what="the first restore to hold its lock")
    second = restore("--yes", str(s["id"]))
    assert second.code == 4, second.err
    assert "is busy: restore operation" in second.err and f"pid {first.pid}" in second.err
    during = voltool("snapshot", vol)
    assert during.code == 4
    waiting = start_voltool("snapshot", "--wait", "120", "--json", vol)
    hold.unlink()
    assert first.wait(120) == 0
    assert waiting.wait(120) == 0
    assert no_private_entries(dk, vol)


def test_not_enough_space_is_refused_in_preflight(
    dk: Docker, small_fs: dict[str, str], volume: Callable[..., str]
) -> None:
    vol = volume("head -c 67108864 /dev/urandom > /v/big")  # more than the small filesystem
    s = snap(vol)
    small = f"{vol}-small"
    dk.client.volumes.create(small, driver="local", driver_opts=small_fs)
    keeper = dk.client.containers.run(
        dk.image,
        ["-c", IDLE_APP],
        entrypoint=["/bin/sh"],
        volumes={small: {"bind": "/v0"}},
        detach=True,
    )
    try:
        dk.run({small: "/v"}, "echo precious > /v/keep")
        before = dk.listing(small)
        r = restore("--yes", str(s["id"]), "--to", small)
        assert r.code == 7, r.err
        assert "not enough space" in r.err
        assert dk.listing(small).entries == before.entries
        assert dk.status(keeper.id) == "running"
    finally:
        keeper.remove(force=True)
        dk.client.volumes.get(small).remove(force=True)


def _with_tty(args: list[str], answer: str) -> tuple[int, str]:
    """Run voltool on a terminal and type `answer` once its prompt shows: what is typed
    before the prompt is thrown away (so an early keystroke is never taken as consent)."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "voltool", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
    )
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 120
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed: the process is gone
                break
            if not chunk:
                break
            seen += chunk
        if not answered and b"to restore into it" in seen:
            os.write(master, (answer + "\n").encode())
            answered = True
        if proc.poll() is not None and not ready:
            break
    code = proc.wait(30)
    os.close(master)
    return code, seen.decode(errors="replace")


def test_confirmation(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    dk.run({vol: "/v"}, CHANGES)
    before = dk.listing(vol)
    code, text = _with_tty(["restore", str(s["id"])], "not-the-name")
    assert code == 10, text
    assert f"into volume:  {vol}" in text and "changes: 2 added, 5 changed, 1 removed" in text
    assert dk.listing(vol).entries == before.entries
    no_tty = restore(str(s["id"]))
    assert no_tty.code == 11 and "pass --yes" in no_tty.err
    code, text = _with_tty(["restore", str(s["id"])], vol)
    assert code == 0, text
    assert voltool("digest", vol).out.strip() == s["tree_digest"]


def test_dry_run_changes_nothing(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    dk.run({vol: "/v"}, CHANGES)
    before = dk.listing(vol)
    r = restore("--dry-run", "--json", str(s["id"]))
    assert r.code == 0, r.err
    plan = json.loads(r.out)
    assert plan["target"] == vol and plan["changes"] == {"added": 2, "changed": 5, "removed": 1}
    assert dk.listing(vol).entries == before.entries
    assert [x["id"] for x in records(voltool("list", "--json", vol).out)] == [s["id"]]
    assert dk.snapshot_volumes(vol) == [s["volume"]]


def test_digest_and_diff(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    assert voltool("digest", vol).out.strip() == s["tree_digest"]
    dk.run({vol: "/v"}, CHANGES)
    d = voltool("diff", "--json", str(s["id"]))
    assert d.code == 0, d.err
    got = {(c["path"], c["kind"]) for c in json.loads(d.out)["changes"]}
    assert got == {
        (".", "changed"),
        ("a.txt", "changed"),
        ("added.txt", "added"),
        ("dir/b.txt", "removed"),
        ("dir/sub", "changed"),
        ("dir/sub/c.txt", "removed"),
        ("hard", "changed"),  # its hard-link partner dir/b.txt is gone
        ("with space", "changed"),
    }
    text = voltool("diff", str(s["id"]))
    assert (
        "+ added.txt" in text.out
        and "- dir/b.txt" in text.out
        and "~ a.txt  (size, sha256)" in text.out
    )
    assert voltool("digest", "vt-nope").code == 3


def test_damaged_snapshots_are_never_removed_by_recover(
    dk: Docker, volume: Callable[..., str]
) -> None:
    vol = volume(SMALL_TREE)
    newer, broken = snap(vol), snap(vol)
    dk.run(
        {str(newer["volume"]): "/s"},
        'sed -i \'s/"format": [12]/"format": 3/\' "/s/$1"',
        in_snapshot(newer, "snapshot.json"),
    )
    dk.run(
        {str(broken["volume"]): "/s"},
        "printf '{not json' > \"/s/$1\"",
        in_snapshot(broken, "snapshot.json"),
    )
    states = {s["id"]: s["state"] for s in records(voltool("list", "--json", vol).out)}
    assert states == {newer["id"]: "damaged", broken["id"]: "damaged"}
    r = voltool("recover", vol)
    assert r.code == 0 and "remove" not in r.out
    assert {s["id"] for s in records(voltool("list", "--json", vol).out)} == {
        newer["id"],
        broken["id"],
    }
    refused = restore("--yes", str(newer["id"]))
    assert refused.code == 6 and "unknown format 3" in refused.err
    doctor = records(voltool("doctor", "--json").out)
    damaged = [c for c in doctor if c["name"] == "snapshots"]
    assert len(damaged) == 2 and all("is damaged" in c["detail"] for c in damaged)


def test_a_forged_source_in_snapshot_json_is_refused(
    dk: Docker, volume: Callable[..., str]
) -> None:
    vol, other = volume(SMALL_TREE), volume("echo precious > /v/p")
    s = snap(vol)
    dk.run(
        {str(s["volume"]): "/s"},
        f'sed -i \'s/"source": "{vol}"/"source": "{other}"/\' "/s/$1"',
        in_snapshot(s, "snapshot.json"),
    )
    before = dk.listing(other)
    r = restore("--yes", str(s["id"]))
    assert r.code == 6 and f"begun.json on source: '{other}' in the file" in r.err
    assert dk.listing(other).entries == before.entries


def test_a_paused_user_of_the_target_is_refused(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str]
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    app = container([vol], IDLE_APP)
    dk.client.api.pause(app)
    try:
        r = restore("--yes", str(s["id"]))
        assert r.code == 5 and f"container {app} uses" in r.err and "paused" in r.err
    finally:
        dk.client.api.unpause(app)


def test_files_older_than_1970_round_trip_as_the_engine_keeps_them(
    dk: Docker, volume: Callable[..., str]
) -> None:
    # Format 1's archive API: format 2 keeps such times (test_store).
    vol = volume('echo x > /v/old && touch -d "1960-01-01 00:00:00" /v/old')
    s = snap(vol, env=F1)
    (old,) = [e for e in dk.manifest(str(s["volume"])) if e["path"] == "old"]
    assert old["mtime"] == 0  # what the engine stores for any time before 1970
    dk.run({vol: "/v"}, "echo changed > /v/old")
    r = restore("--yes", str(s["id"]))
    assert r.code == 0, r.err
    assert dk.read(vol, "old") == b"x\n"


def test_a_dry_run_refuses_a_fifo_as_the_restore_would(
    dk: Docker, volume: Callable[..., str]
) -> None:
    vol = volume("echo a > /v/a && mkfifo /v/pipe")
    s = snap(vol)
    manifest = dk.manifest(str(s["volume"]), in_snapshot(s, "manifest.jsonl"))
    assert any(e["type"] == "fifo" for e in manifest)
    before = dk.listing(vol)
    r = restore("--dry-run", str(s["id"]))
    assert r.code == 6, r.err
    assert "fifo 'pipe'" in r.err and "--allow-special" in r.err
    assert restore("--yes", str(s["id"])).code == 6
    assert dk.listing(vol).entries == before.entries
    ok = restore("--dry-run", "--allow-special", str(s["id"]))
    assert ok.code == 0, ok.err
    assert dk.listing(vol).entries == before.entries
    assert dk.managed_containers() == []
