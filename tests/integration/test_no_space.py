"""A target that fills up while a restore stages: exit 7, one line, the target as it was."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.integration.dockertools import (
    IDLE_APP,
    SMALL_TREE,
    Docker,
    hold_env,
    in_snapshot,
    records,
    start_voltool,
    voltool,
    wait_for,
)

pytestmark = pytest.mark.engine

TMPFS = {"type": "tmpfs", "device": "tmpfs", "o": "size=64m"}
BIG = "head -c 25165824 /dev/urandom > /v/big && echo small > /v/small"
FILL = "dd if=/dev/zero of=/v/filler bs=1M 2>/dev/null; sync; df -k /v | tail -n 1"


# Where each format's restore is held while the test fills the target up: format 1
# once 16 MiB are on their way into the staging directory; format 2 as its agent is
# about to copy. Either way the pre-flight has passed.
FULL_AT = {"1": "staging-data", "2": "stage"}
SAID = {
    "1": "no space left on volume {target!r} (writing an archive to /v)",
    "2": "staging snapshot {sid} into {target} failed: no space left on device",
}


@pytest.mark.parametrize("fmt", ["2", "1"], ids=["format-2", "format-1"])
def test_a_target_full_during_staging_is_no_space_and_left_as_it_was(
    dk: Docker,
    small_fs: dict[str, str],
    volume: Callable[..., str],
    container: Callable[..., str],
    tmp_path: Path,
    fmt: str,
) -> None:
    source = volume(BIG)
    env = {"VOLTOOL_FORMAT": fmt}
    r = voltool("snapshot", "--json", "--no-quiesce", source, env=env)
    assert r.code == 0, r.err
    sid = str(records(r.out)[0]["id"])
    target = volume(driver_opts=small_fs)
    app = container([target], IDLE_APP)
    dk.run({target: "/v"}, SMALL_TREE)
    before = dk.listing(target)
    assert "dir/sub/c.txt" in before.entries

    # Held once the pre-flight has passed; now the test takes every byte that is left.
    hold = tmp_path / "hold"
    proc = start_voltool(
        "restore", "--yes", "--to", target, sid, env={**env, **hold_env(FULL_AT[fmt], hold)}
    )
    try:
        wait_for(hold.exists, timeout=120, what="the restore to stage")
        df = dk.run({target: "/v"}, FILL).split()
        assert int(df[3]) < 1024, f"the filesystem is not full: {df}"
        hold.unlink()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)

    assert proc.returncode == 7, err
    lines = err.strip().splitlines()
    assert lines == ["voltool: error: " + SAID[fmt].format(target=target, sid=sid)], err
    assert out == ""

    after = dk.listing(target)
    assert "filler" in after.entries
    kept = {k: v for k, v in after.entries.items() if k != "filler"}
    assert not [p for p in kept if p.startswith(".voltool-")], sorted(kept)
    # The root's mtime is put back as it was before the restore; the filler the test
    # wrote changed it, so compare the root without it.
    assert replace(kept.pop("."), mtime=0) == replace(before.entries["."], mtime=0)
    assert kept == {k: v for k, v in before.entries.items() if k != "."}
    assert after.links == before.links
    assert dk.status(app) == "running"
    assert dk.managed_containers() == []
    # Rolled back for good: nothing is left pending for `voltool recover`.
    journal = Path(os.environ["VOLTOOL_STATE_DIR"]) / "journal.jsonl"
    logged = [json.loads(line) for line in journal.read_text().splitlines()]
    ours = [r for r in logged if r.get("target") == target and r["step"] == "begin"]
    assert len(ours) == 1
    steps = [r["step"] for r in logged if r["op"] == ours[0]["op"]]
    assert steps[-1] == "failed", steps


def test_a_tmpfs_volume_is_not_restored_into(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str]
) -> None:
    # Stopping its only user would unmount it, and its data (and the staged copy) with it.
    target = volume(driver_opts=TMPFS)
    app = container([target], IDLE_APP)
    dk.run({target: "/v"}, "echo one > /v/small")
    r = voltool("snapshot", "--json", "--no-quiesce", target)
    assert r.code == 0, r.err
    dk.run({target: "/v"}, "echo two > /v/small")
    refused = voltool("restore", "--yes", str(records(r.out)[0]["id"]))
    assert refused.code == 5, refused.err
    assert "is a tmpfs volume" in refused.err and len(refused.err.strip().splitlines()) == 1
    assert dk.read(target, "small") == b"two\n"
    assert dk.status(app) == "running"


def test_each_filesystem_is_charged_with_what_is_written_on_it(
    dk: Docker,
    small_fs: dict[str, str],
    volume: Callable[..., str],
    container: Callable[..., str],
) -> None:
    # 16 MiB used, some 37 free: a staged copy (16 MiB and 16 of slack) fits on the
    # target's own filesystem; the staged copy and the pre-restore snapshot (16 MiB more)
    # together would not, but that snapshot is not written there: where snapshots are.
    target = volume(driver_opts=small_fs)
    app = container([target], IDLE_APP)
    dk.run({target: "/v"}, "head -c 16777216 /dev/urandom > /v/big && echo one > /v/small")
    r = voltool("snapshot", "--json", "--no-quiesce", target)
    assert r.code == 0, r.err
    dk.run({target: "/v"}, "echo two > /v/small")
    restored = voltool("restore", "--yes", "--json", str(records(r.out)[0]["id"]))
    assert restored.code == 0, restored.err
    assert dk.read(target, "small") == b"one\n"
    kept = json.loads(restored.out)["pre_restore_snapshot"]
    (pre,) = [s for s in records(voltool("list", "--json", target).out) if s["id"] == kept]
    assert dk.read(pre["volume"], in_snapshot(pre, "data/small")) == b"two\n"
    assert dk.status(app) == "running"
