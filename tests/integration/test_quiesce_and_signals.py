"""Quiesced containers are resumed in every outcome; after a crash, by recover.

Snapshots are taken in format 2 (the default), held where the agent has copied
the data ("copied") or stopped mid-copy (the agent's own hold point); format 1's
own failure, a snapshot volume removed under its stream, has a test of its own.
"""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.dockertools import (
    F1,
    Docker,
    agent_held_mid_copy,
    hold_env,
    records,
    start_voltool,
    voltool,
    wait_for,
)

pytestmark = pytest.mark.engine

# Held mid-copy by the agent's hold point, whatever their size: two small files.
TWO_FILES = "echo big > /v/big && echo small > /v/small"


def hold(step: str, tmp_path: Path) -> tuple[dict[str, str], Path]:
    f = tmp_path / f"hold-{step}"
    return hold_env(step, f), f


@pytest.mark.parametrize(
    ("flag", "during"),
    [(None, "paused"), ("--stop", "exited"), ("--no-quiesce", "running")],
    ids=["pause", "stop", "no-quiesce"],
)
def test_containers_are_quiesced_during_the_copy_and_running_after(
    dk: Docker,
    volume: Callable[..., str],
    container: Callable[..., str],
    tmp_path: Path,
    flag: str | None,
    during: str,
) -> None:
    vol = volume("echo x > /v/x")
    app = container([vol])
    env, f = hold("copied", tmp_path)
    proc = start_voltool("snapshot", *([flag] if flag else []), vol, env=env)
    wait_for(f.exists, what="the hold point")
    assert dk.status(app) == during
    f.unlink()
    assert proc.wait(60) == 0, proc.stderr.read() if proc.stderr else ""
    assert dk.status(app) == "running"
    before = dk.read(vol, "log").count(b"\n")
    wait_for(lambda: dk.read(vol, "log").count(b"\n") > before + 3, what="the app to write again")


def test_one_pause_for_a_group_of_volumes(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    a, b = volume("echo a > /v/a"), volume("echo b > /v/b")
    app_a, app_b, app_ab = container([a]), container([b]), container([a, b])
    env, f = hold("copied", tmp_path)
    proc = start_voltool("snapshot", a, b, env=env)
    wait_for(f.exists, what="the hold point")
    assert [dk.status(c) for c in (app_a, app_b, app_ab)] == ["paused"] * 3
    f.unlink()
    assert proc.wait(60) == 0
    assert [dk.status(c) for c in (app_a, app_b, app_ab)] == ["running"] * 3


def test_failure_mid_operation_resumes_and_leaves_nothing(
    dk: Docker, agent: str, volume: Callable[..., str], container: Callable[..., str]
) -> None:
    vol = volume(TWO_FILES)
    app = container([vol])
    proc, helper = agent_held_mid_copy(dk, agent, vol, "snapshot", vol)
    assert dk.status(app) == "paused"
    helper.kill()  # the agent dies mid-copy
    code = proc.wait(60)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 1, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("voltool: error: the snapshot of") and "Traceback" not in err
    assert dk.status(app) == "running"
    assert dk.snapshot_volumes(vol) == []  # the store made for it went too
    assert dk.managed_containers() == []


def test_a_format_1_snapshot_volume_removed_mid_stream_resumes_and_leaves_nothing(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume("echo x > /v/x")
    app = container([vol])
    env, f = hold("stream", tmp_path)
    proc = start_voltool("snapshot", vol, env={**F1, **env})
    wait_for(f.exists, what="the hold point")
    (snap,) = dk.snapshot_volumes(vol)
    # The snapshot volume, removed under it (its keeper first: it holds the volume).
    dk.client.containers.get(snap.replace("voltool-snap-", "voltool-keep-")).remove(force=True)
    dk.client.volumes.get(snap).remove()
    f.unlink()
    code = proc.wait(60)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 6, err
    assert "removed or replaced during the snapshot" in err and "Traceback" not in err
    assert dk.status(app) == "running"
    assert dk.snapshot_volumes(vol) == []
    assert dk.client.volumes.list(filters={"name": snap}) == []
    assert dk.managed_containers() == []


def mid_copy(dk: Docker, agent: str, vol: str) -> subprocess.Popen[str]:
    """A snapshot of `vol` whose agent has copied a file and holds there."""
    proc, _ = agent_held_mid_copy(dk, agent, vol, "snapshot", vol)
    return proc


def test_sigint_mid_copy_cleans_up_everything(
    dk: Docker, agent: str, volume: Callable[..., str], container: Callable[..., str]
) -> None:
    vol = volume(TWO_FILES)
    app = container([vol])
    proc = mid_copy(dk, agent, vol)
    assert dk.status(app) == "paused"
    proc.send_signal(signal.SIGINT)
    code = proc.wait(60)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert dk.status(app) == "running"
    assert dk.snapshot_volumes(vol) == []
    assert dk.managed_containers() == []


def test_sigterm_is_handled_like_ctrl_c(dk: Docker, agent: str, volume: Callable[..., str]) -> None:
    vol = volume(TWO_FILES)
    proc = mid_copy(dk, agent, vol)
    proc.send_signal(signal.SIGTERM)
    code = proc.wait(60)
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 130, err
    assert dk.snapshot_volumes(vol) == [] and dk.managed_containers() == [], err


@pytest.mark.parametrize("fresh_state", [False, True], ids=["same-state", "other-state"])
def test_sigkill_mid_copy_leaves_what_doctor_reports_and_recover_clears(
    dk: Docker,
    agent: str,
    volume: Callable[..., str],
    container: Callable[..., str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    fresh_state: bool,
) -> None:
    vol = volume(TWO_FILES)
    app = container([vol])
    proc = mid_copy(dk, agent, vol)
    proc.kill()
    proc.wait(30)
    assert dk.status(app) == "paused"  # nobody resumed it: that is recover's job
    if fresh_state:
        # What another user, another $HOME or another host sees: no local journal.
        monkeypatch.setenv("VOLTOOL_STATE_DIR", str(tmp_path / "elsewhere"))

    doctor = voltool("doctor", "--json")
    assert doctor.code == 1, doctor.err  # a container left paused is a failed check
    checks = records(doctor.out)
    # Only this test's container: the engine may hold others' (doctor looks at everything).
    (frozen,) = [c for c in checks if c["name"] == "containers" and app in c["detail"]]
    assert frozen["status"] == "fail" and frozen["fix"] == "voltool recover"
    assert f"container {app} was paused by snapshot" in frozen["detail"]
    found = [c["detail"] for c in checks if c["name"] == "leftovers" and c["status"] == "warn"]
    assert any("interrupted snapshot" in d and vol in d for d in found), found
    ours = [c for c in checks if c["status"] != "ok" and (vol in c["detail"] or app in c["detail"])]
    assert ours and all(c["fix"] == "voltool recover" for c in ours)

    refused = voltool("snapshot", vol)
    assert refused.code == 9 and "voltool recover" in refused.err

    dry = voltool("recover", vol, "--dry-run")
    assert dry.code == 0 and f"would unpause container {app}" in dry.out
    assert dk.status(app) == "paused" and dk.snapshot_volumes(vol) != []

    rec = voltool("recover", vol)
    assert rec.code == 0, rec.err
    # Exactly what the dry run said, each once, in the same order.
    assert rec.out.splitlines() == [line.removeprefix("would ") for line in dry.out.splitlines()]
    assert f"unpause container {app}" in rec.out
    assert dk.status(app) == "running"
    assert dk.snapshot_volumes(vol) == []
    assert dk.managed_containers() == []
    again = voltool("recover", vol)
    assert (again.code, again.out.strip()) == (0, "nothing to recover")
    ok = voltool("snapshot", vol)
    assert ok.code == 0, ok.err
