"""Recovery from the engine alone: races, stops in flight, and operations that cannot be finished.

Every `voltool recover` here runs with a state directory of its own, as another
user, another $HOME or another host would: what it needs is in the engine.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from tests.integration.dockertools import (
    AGENT_COPIED_A_FILE,
    F1,
    IDLE_APP,
    SMALL_TREE,
    Docker,
    Listing,
    agent_held_mid_copy,
    hold_env,
    in_snapshot,
    records,
    start_voltool,
    voltool,
    wait_for,
)

pytestmark = pytest.mark.engine

# An application that ignores SIGTERM: the engine's stop takes its whole timeout.
STUBBORN_APP = "trap '' TERM; while :; do sleep 0.1; done"


def elsewhere(tmp_path: Path) -> dict[str, str]:
    return {"VOLTOOL_STATE_DIR": str(tmp_path / "elsewhere")}


def snap(vol: str) -> dict[str, object]:
    r = voltool("snapshot", "--json", vol)
    assert r.code == 0, r.err
    return records(r.out)[0]  # type: ignore[no-any-return]


@pytest.fixture
def new_volume(dk: Docker) -> Iterator[Callable[[str], str]]:
    """Names for volumes a restore --create makes; removed with their snapshots afterwards."""
    names: list[str] = []

    def name(base: str) -> str:
        names.append(f"{base}-new")
        return names[-1]

    yield name
    for n in names:
        for c in dk.client.api.containers(all=True, filters={"volume": n}):
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                dk.client.api.remove_container(c["Id"], force=True)
        for s in dk.snapshot_volumes(n):
            for c in dk.client.api.containers(all=True, filters={"volume": s}):
                with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                    dk.client.api.remove_container(c["Id"], force=True)
            dk.client.volumes.get(s).remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):
            dk.client.volumes.get(n).remove(force=True)


def entries(listing: Listing) -> dict[str, object]:
    return {k: v for k, v in listing.entries.items() if k != "."}


@pytest.mark.parametrize("killed", [False, True], ids=["both-finish", "second-killed-staging"])
def test_two_restores_that_create_one_volume_lose_nothing(
    dk: Docker,
    volume: Callable[..., str],
    new_volume: Callable[[str], str],
    tmp_path: Path,
    killed: bool,
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    tree = entries(dk.listing(vol))
    fresh = new_volume(vol)
    dk.also.append(fresh)
    hold = tmp_path / "hold"
    # The second restore plans (the volume does not exist: "create") and waits before its lock.
    second = start_voltool(
        "restore",
        "--yes",
        str(s["id"]),
        "--to",
        fresh,
        "--create",
        env=hold_env("locking,stage" if killed else "locking", hold),
    )
    wait_for(hold.exists, timeout=120, what="the second restore to have planned")
    first = voltool("restore", "--yes", str(s["id"]), "--to", fresh, "--create")
    assert first.code == 0, first.err
    dk.run({fresh: "/v"}, "echo mine > /v/written-between")
    hold.unlink()
    if killed:
        wait_for(hold.exists, timeout=120, what="the second restore to stage")
        second.kill()
        second.wait(30)
        r = voltool("recover", fresh, env=elsewhere(tmp_path))
        assert r.code == 0, r.err
        assert "remove the volume" not in r.out
        # Nothing lost: the first restore's data and what was written since.
        got = entries(dk.listing(fresh))
        assert "written-between" in got
        assert {k: v for k, v in got.items() if k != "written-between"} == tree
    else:
        assert second.wait(120) == 0, second.stderr.read() if second.stderr else ""
        assert entries(dk.listing(fresh)) == tree
        # What was written between the two is kept, as the second one's pre-restore snapshot.
        listed = records(voltool("list", "--json", fresh).out)
        (kept,) = [x for x in listed if x["kind"] == "pre-restore"]
        assert "written-between" in dk.listing(kept["volume"], in_snapshot(kept, "data")).entries
    assert dk.managed_containers() == []


def test_a_stop_in_flight_when_killed_still_ends_with_the_container_running(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    app = container([vol], STUBBORN_APP)
    started = dk.client.api.inspect_container(app)["State"]["StartedAt"]
    hold = tmp_path / "hold"
    proc = start_voltool(
        "restore",
        "--yes",
        str(s["id"]),
        env={**hold_env("stopping", hold), "VOLTOOL_STOP_TIMEOUT": "10"},
    )
    wait_for(hold.exists, timeout=120, what="the restore to be about to stop the app")
    # Kill voltool once the engine has begun the stop (its SIGTERM is sent), not before.
    signalled = threading.Event()
    events = dk.client.events(decode=True, filters={"container": app, "event": "kill"})

    def watch() -> None:
        for _ in events:
            signalled.set()
            return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    hold.unlink()
    assert signalled.wait(60), "the engine never began to stop the app"
    events.close()
    proc.kill()
    proc.wait(30)
    assert dk.status(app) == "running"  # still stopping: the engine waits for its timeout

    r = voltool("recover", vol, env=elsewhere(tmp_path))
    assert r.code == 0, r.err
    assert f"wait for the stop of container {app} to end, then start it" in r.out
    assert dk.status(app) == "running"
    assert dk.client.api.inspect_container(app)["State"]["StartedAt"] != started
    assert not any(n.startswith(".voltool-") for n in dk.listing(vol).entries)
    assert dk.managed_containers() == []


def test_an_operation_that_cannot_be_finished_does_not_keep_others_frozen(
    dk: Docker,
    agent: str,
    volume: Callable[..., str],
    container: Callable[..., str],
    tmp_path: Path,
) -> None:
    gone, paused = volume(SMALL_TREE), volume("head -c 67108864 /dev/zero > /v/big")
    s = snap(gone)
    dk.run({gone: "/v"}, "echo changed > /v/a.txt")
    # A restore killed inside its swap, whose target is then removed by hand ...
    hold = tmp_path / "hold-swap"
    proc = start_voltool("restore", "--yes", str(s["id"]), env=hold_env("swap", hold))
    wait_for(hold.exists, timeout=120, what="the restore's swap")
    proc.kill()
    proc.wait(30)
    for c in dk.client.api.containers(all=True, filters={"volume": gone}):
        dk.client.api.remove_container(c["Id"], force=True)
    dk.client.volumes.get(gone).remove(force=True)
    # ... and a snapshot killed mid-copy with its application paused.
    app = container([paused])
    proc, _ = agent_held_mid_copy(dk, agent, paused, "snapshot", paused)
    proc.kill()
    proc.wait(30)
    assert dk.status(app) == "paused"

    r = voltool("recover", gone, paused, env=elsewhere(tmp_path))
    assert r.code == 9, r.err
    assert f"unpause container {app}" in r.out
    assert dk.status(app) == "running"
    assert f"its target volume {gone!r} no longer exists" in r.err
    assert "Traceback" not in r.err
    assert dk.snapshot_volumes(paused) == []
    # Reported once, and not again: the rest is recovered and nothing is left pending.
    again = voltool("recover", gone, paused, env=elsewhere(tmp_path))
    assert (again.code, again.out.strip()) == (0, "nothing to recover"), again.err
    assert voltool("snapshot", paused).code == 0


@pytest.mark.parametrize(
    ("fmt", "mode", "step"),
    [
        # Format 2, the default: the agent copies into the store ("copied": not committed).
        ("2", "pause", "begin"),
        ("2", "pause", "quiesce"),
        ("2", "pause", AGENT_COPIED_A_FILE),
        ("2", "pause", "copied"),
        ("2", "pause", "resumed"),
        ("2", "stop", "quiesce"),
        ("2", "stop", "stopping"),
        ("2", "stop", AGENT_COPIED_A_FILE),
        ("2", "stop", "copied"),
        ("2", "stop", "resumed"),
        # Format 1: a snapshot volume filled through the archive API.
        ("1", "pause", "stream"),
        ("1", "pause", "streaming-data"),
        ("1", "stop", "streaming-data"),
    ],
)
def test_a_snapshot_killed_at_any_step_is_recovered_from_the_engine_alone(
    dk: Docker,
    agent: str,
    volume: Callable[..., str],
    container: Callable[..., str],
    tmp_path: Path,
    fmt: str,
    mode: str,
    step: str,
) -> None:
    vol = volume("head -c 33554432 /dev/urandom > /v/big && echo x > /v/x")
    app = container([vol], IDLE_APP)
    args = ["snapshot", vol] + (["--stop"] if mode == "stop" else [])
    env = F1 if fmt == "1" else {}
    if step == AGENT_COPIED_A_FILE:
        proc, _ = agent_held_mid_copy(dk, agent, vol, *args, env=env)
    else:
        hold = tmp_path / "hold"
        proc = start_voltool(*args, env={**env, **hold_env(step, hold)})
        wait_for(hold.exists, timeout=120, what=f"the snapshot to reach {step}")
    proc.kill()
    proc.wait(30)

    env = elsewhere(tmp_path)
    dry = voltool("recover", vol, "--dry-run", env=env)
    assert dry.code == 0, dry.err
    r = voltool("recover", vol, env=env)
    assert r.code == 0, r.err
    said = [line.removeprefix("would ") for line in dry.out.splitlines()]
    if step == "stopping":
        # Killed after the stop was recorded but before it was asked for: recover waits
        # for a stop that never comes, and says so instead of what it planned.
        planned = next(i for i, line in enumerate(said) if line.startswith("wait for the stop"))
        said[planned] = (
            f"left container {app} running: its stop never took effect"
            + said[planned][said[planned].index(" (snapshot") :]
        )
    assert r.out.splitlines() == said
    assert dk.status(app) == "running"
    assert dk.managed_containers() == []
    # Committed before the kill (it was resumed): kept. Anything less: gone.
    states = [s["state"] for s in records(voltool("list", "--json", vol).out)]
    assert states == (["complete"] if step == "resumed" else []), states
    again = voltool("recover", vol, env=env)
    assert (again.code, again.out.strip()) == (0, "nothing to recover")
    assert voltool("snapshot", vol, "--no-quiesce").code == 0


def test_an_offline_restore_never_shows_its_hidden_directories(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str]
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    dk.run({vol: "/v"}, "echo changed > /v/a.txt")
    # The application lists the volume's top, over and over, on its stdout.
    app = container([vol], "trap 'exit 0' TERM; while :; do ls -A /v0; sleep 0.02; done")
    r = voltool("restore", "--yes", "--offline", str(s["id"]))
    assert r.code == 0, r.err
    wait_for(lambda: dk.status(app) == "running", what="the app to run again")
    seen = dk.client.api.logs(app).decode(errors="replace")
    assert "a.txt" in seen  # it did list the volume, before and after
    assert ".voltool-" not in seen


def test_a_process_that_cannot_be_checked_is_only_recovered_when_a_person_says_so(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume("head -c 33554432 /dev/zero > /v/big")
    app = container([vol])
    hold = tmp_path / "hold"
    # A snapshot run from another host, as far as its owner token says (another UTS name).
    proc = subprocess.Popen(
        [
            "unshare",
            "-u",
            "sh",
            "-c",
            'hostname voltool-elsewhere && exec "$@"',
            "sh",
            sys.executable,
            "-m",
            "voltool",
            "snapshot",
            vol,
        ],
        env={**os.environ, **hold_env("copied", hold)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for(hold.exists, timeout=120, what="the snapshot's copy")
    proc.kill()  # unshare and sh exec voltool: the same process
    proc.wait(30)
    assert dk.status(app) == "paused"

    env = elsewhere(tmp_path)
    r = voltool("recover", vol, env=env)
    assert (r.code, r.out.strip()) == (0, "nothing to recover"), r.err  # it may be alive
    assert dk.status(app) == "paused"
    doctor = records(voltool("doctor", "--json", env=env).out)
    (held,) = [c for c in doctor if c["name"] == "containers" and app in c["detail"]]
    assert held["status"] == "warn" and f"container {app} is paused by snapshot" in held["detail"]
    assert "voltool-elsewhere" in held["detail"]
    op = held["fix"].rsplit(" ", 1)[-1]
    assert held["fix"] == f"if that process is gone: voltool recover --abandoned {op}"

    r = voltool("recover", vol, "--abandoned", op, env=env)
    assert r.code == 0, r.err
    assert f"unpause container {app}" in r.out
    assert dk.status(app) == "running"
    assert dk.snapshot_volumes(vol) == [] and dk.managed_containers() == []
    bad = voltool("recover", "--abandoned", "../x", env=env)
    assert bad.code == 2 and "invalid operation id" in bad.err


def test_records_that_do_not_read_well_block_nothing(
    dk: Docker, volume: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume("echo x > /v/x")
    forged = [
        # Malformed fields in a well-formed record of a dead process.
        {
            "op": "00000000000000f1",
            "step": "begin",
            "kind": "snapshot",
            "volumes": [vol],
            "owner": "nobody",
            "snapshots": 5,
        },
        {"op": "00000000000000f1", "step": "quiesce", "containers": [{"name": 1}, "x"]},
        # An id that would name paths outside voltool's own.
        {
            "op": "../../x",
            "step": "begin",
            "kind": "restore",
            "volumes": [vol],
            "target": vol,
            "owner": "nobody",
        },
    ]
    for rec in forged:
        dk.client.api.create_container(
            dk.image,
            ["true"],
            labels={
                "io.voltool.managed": "true",
                "io.voltool.role": "record",
                "io.voltool.op": str(rec["op"]),
                "io.voltool.record": json.dumps(rec),
                "io.voltool.record.seq": f"{len(forged):020d}",
                "io.voltool.volumes": vol,
            },
        )
    r = voltool("recover", vol, env=elsewhere(tmp_path))
    assert r.code == 0, r.err
    assert "Traceback" not in r.err
    assert "mark operation 00000000000000f1 recovered" in r.out
    assert "which does not read as one" in r.out
    assert dk.listing(vol).entries["x"].size == 2
    assert voltool("snapshot", vol).code == 0


def forge(dk: Docker, vol: str, rec: dict[str, object]) -> None:
    """A record in the engine, as anyone who reaches the engine could make one."""
    dk.client.api.create_container(
        dk.image,
        ["true"],
        labels={
            "io.voltool.managed": "true",
            "io.voltool.role": "record",
            "io.voltool.op": str(rec["op"]),
            "io.voltool.record": json.dumps(rec),
            "io.voltool.record.seq": "0" * 20,
            "io.voltool.volumes": vol,
        },
    )


def test_a_later_record_cannot_change_what_a_restore_said_it_would_do(
    dk: Docker, volume: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    dk.run({vol: "/v"}, "echo newer > /v/newer")
    hold = tmp_path / "hold"
    proc = start_voltool("restore", "--yes", str(s["id"]), env=hold_env("swapped", hold))
    wait_for(hold.exists, timeout=120, what="the restore's swap")
    proc.kill()
    proc.wait(30)
    journal = Path(os.environ["VOLTOOL_STATE_DIR"]) / "journal.jsonl"
    op = [json.loads(line) for line in journal.read_text().splitlines()][-1]["op"]
    # "No pre-restore snapshot after all", said by a record made after the fact.
    forge(dk, vol, {"op": op, "step": "note", "safety": None, "offline": True})
    r = voltool("recover", vol, env=elsewhere(tmp_path))
    assert r.code == 0, r.err
    assert "keep the old data" in r.out
    (kept,) = [x for x in records(voltool("list", "--json", vol).out) if x["kind"] == "pre-restore"]
    assert dk.read(kept["volume"], in_snapshot(kept, "data/newer")) == b"newer\n"


def test_abandoned_is_refused_for_a_process_alive_here(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume("head -c 33554432 /dev/zero > /v/big")
    app = container([vol])
    hold = tmp_path / "hold"
    proc = start_voltool("snapshot", vol, env=hold_env("copied", hold))
    try:
        wait_for(hold.exists, timeout=120, what="the snapshot's copy")
        journal = Path(os.environ["VOLTOOL_STATE_DIR"]) / "journal.jsonl"
        op = next(json.loads(line) for line in journal.read_text().splitlines())["op"]
        r = voltool("recover", vol, "--abandoned", op, env=elsewhere(tmp_path))
        assert r.code == 9 and f"operation {op} is not abandoned" in r.err, r.err
        assert dk.status(app) == "paused"  # the live snapshot's to resume, not recover's
        hold.unlink()
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert dk.status(app) == "running"


def test_an_offline_restore_cut_after_its_swap_keeps_its_containers_down_until_recovered(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume(SMALL_TREE)
    s = snap(vol)
    dk.run({vol: "/v"}, "echo changed > /v/a.txt")
    app = container([vol], "trap 'exit 0' TERM; while :; do ls -A /v0; sleep 0.02; done")
    hold = tmp_path / "hold"
    proc = start_voltool("restore", "--yes", "--offline", str(s["id"]), env=hold_env("save", hold))
    wait_for(hold.exists, timeout=120, what="the restore to keep the old data")
    proc.send_signal(signal.SIGTERM)
    hold.unlink()
    assert proc.wait(120) == 130
    assert dk.status(app) == "exited"  # down until the hidden directories are gone
    r = voltool("recover", vol, env=elsewhere(tmp_path))
    assert r.code == 0, r.err
    assert dk.status(app) == "running"
    assert ".voltool-" not in dk.client.api.logs(app).decode(errors="replace")
    assert not [n for n in dk.listing(vol).entries if n.startswith(".voltool-")]
