"""Copies off the machine: push to and pull from restic repositories, against the real
engine, with restic running in the agent image (built from this host's restic).

Repositories: a directory of this host (bind-mounted into restic's helper), and a real
network backend on loopback, `rclone serve restic` (a REST server).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration import test_store
from tests.integration.dockertools import (
    F2,
    Docker,
    Result,
    hold_env,
    records,
    snapshot_record,
    start_voltool,
    voltool,
    wait_for,
)
from tests.integration.test_store import fidelity_volume, scan

pytestmark = pytest.mark.engine

PASSWORD = "correct-horse-battery-staple-7f3a"
URL_SECRET = "rest-basic-auth-secret-5d1e"  # the REST server's, given in the repository's URL


@dataclass
class Remotes:
    """A config file of this test's own, and the remotes in it."""

    home: Path
    env: dict[str, str]

    def run(self, *args: str, env: dict[str, str] | None = None, **kw: Any) -> Result:
        return voltool(*args, env={**self.env, **(env or {})}, **kw)

    def ok(self, *args: str) -> Result:
        r = self.run(*args)
        assert r.code == 0, f"voltool {' '.join(args)}: {r.err}"
        return r

    def add_local(self, name: str = "local", password: str = PASSWORD) -> Path:
        repo = self.home / f"repo-{name}"
        pw = self.home / f"{name}.pass"
        pw.write_text(password + "\n")
        self.ok("remote", "add", name, str(repo), "--password-file", str(pw))
        return repo


@pytest.fixture
def remotes(tmp_path: Path, agent: str) -> Iterator[Remotes]:
    if shutil.which("restic") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but this host has no restic (scripts/test.sh installs it)")
        pytest.skip("no restic on this host")
    home = tmp_path / "remotes"
    home.mkdir()
    env = {**F2, "VOLTOOL_CONFIG": str(home / "config.toml")}
    yield Remotes(home, env)
    # Repositories are written by root inside the helpers: remove them here.
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def rest_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`rclone serve restic` on a loopback port: a REST repository server, no TLS, with basic
    authentication: its URL holds a secret."""
    if shutil.which("rclone") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true but this host has no rclone (scripts/test.sh installs it)")
        pytest.skip("no rclone on this host")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = tmp_path / "rest"
    root.mkdir()
    proc = subprocess.Popen(
        [
            *("rclone", "serve", "restic", "--addr", f"127.0.0.1:{port}", str(root)),
            *("--user", "voltool", "--pass", URL_SECRET),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def up() -> bool:
            with socket.socket() as c:
                return c.connect_ex(("127.0.0.1", port)) == 0

        wait_for(up, 30, "rclone serve restic to listen")
        yield f"rest:http://voltool:{URL_SECRET}@127.0.0.1:{port}/", proc
    finally:
        with_signal(proc, signal.SIGCONT)
        proc.terminate()
        proc.wait(10)


def with_signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)


def test_a_snapshot_survives_the_loss_of_its_store_through_a_local_repository(
    dk: Docker, agent: str, volume: Callable[..., str], remotes: Remotes
) -> None:
    vol = fidelity_volume(dk, agent, volume)
    source = scan(dk, agent, vol)
    made = snapshot_record(vol, env=F2)
    remotes.add_local()
    remotes.ok("remote", "init", "local")
    (pushed,) = records(remotes.ok("push", made["id"], "--remote", "local", "--json").out)
    assert pushed["id"] == made["id"] and not pushed["skipped"]
    (listed,) = records(remotes.ok("remote", "snapshots", "local", "--json").out)
    assert listed["id"] == made["id"] and listed["tree_digest"] == made["tree_digest"]
    assert listed["volume"] == vol and listed["bytes"] == made["bytes"]

    remotes.ok("delete", made["id"], "--yes")
    (pulled,) = records(remotes.ok("pull", "local", made["id"][:8], "--json").out)
    assert pulled["kind"] == "pulled" and pulled["source"] == vol
    assert pulled["tree_digest"] == made["tree_digest"] and pulled["id"] != made["id"]
    assert pulled["origin_id"] == made["id"] and pulled["origin_created"] == made["created"]
    assert pulled["created"] > made["created"]  # a new snapshot here, of an older state
    remotes.ok("verify", pulled["id"])

    copy = f"{vol}-pulled"
    dk.also.append(copy)
    remotes.ok("restore", pulled["id"], "--to", copy, "--create", "--yes", "--allow-special")
    test_store._same_tree(scan(dk, agent, copy), source)


def _local_ids(r: Remotes, vol: str) -> set[str]:
    listed = records(r.ok("list", vol, "--json").out)
    return {s["id"] for s in listed}


def test_a_second_push_is_skipped_and_an_incremental_one_adds_what_changed(
    dk: Docker, volume: Callable[..., str], remotes: Remotes
) -> None:
    vol = volume(
        "head -c 8388608 /dev/urandom > /v/big && mkdir /v/d && "
        "for i in 1 2 3 4 5 6 7 8; do echo $i > /v/d/$i; done"
    )
    # Files changed within a second of a snapshot are copied again by the next one (their
    # ctime cannot tell): a second's gap lets the next snapshot link them, as in real use.
    time.sleep(1.1)
    first = snapshot_record(vol, env=F2)
    remotes.add_local()
    remotes.ok("remote", "init", "local")
    (one,) = records(remotes.ok("push", vol, "--remote", "local", "--json").out)
    assert not one["skipped"] and one["data_added"] >= 8 * 2**20
    (again,) = records(remotes.ok("push", first["id"], "--remote", "local", "--json").out)
    assert again["skipped"] and again["restic_id"] == one["restic_id"]

    dk.run({vol: "/v"}, "head -c 65536 /dev/urandom > /v/d/new && echo changed > /v/d/3")
    second = snapshot_record(vol, env=F2)
    pushed = records(remotes.ok("push", vol, "--remote", "local", "--json").out)
    assert [p["id"] for p in pushed] == [first["id"], second["id"]]
    assert pushed[0]["skipped"] and not pushed[1]["skipped"]
    # The 8 MiB file is not read again nor stored twice: what is added is the change and
    # the trees and metadata around it.
    assert pushed[1]["data_added"] < 2**20, pushed[1]
    assert pushed[1]["files_new"] + pushed[1]["files_changed"] <= 6, pushed[1]
    listed = records(remotes.ok("remote", "snapshots", "local", "--json").out)
    assert sorted(s["id"] for s in listed) == sorted([first["id"], second["id"]])


def test_a_rest_server_on_loopback_round_trips_and_keeps_its_secrets(
    dk: Docker,
    agent: str,
    volume: Callable[..., str],
    remotes: Remotes,
    rest_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, server = rest_server
    vol = volume("echo data > /v/f && mkdir /v/d && echo more > /v/d/g")
    made = snapshot_record(vol, env=F2)
    pw = remotes.home / "rest.pass"
    pw.write_text(PASSWORD + "\n")
    key = "aws-secret-key-that-must-not-leak-91c2"
    env_file = remotes.home / "rest.env"
    env_file.write_text(f"# backend credentials\nAWS_SECRET_ACCESS_KEY={key}\n")
    remotes.ok(
        "remote", "add", "rest", url, "--password-file", str(pw), "--env-file", str(env_file)
    )
    shown = remotes.ok("remote", "ls", "--json")
    assert PASSWORD not in shown.out and key not in shown.out and URL_SECRET not in shown.out
    assert records(shown.out)[0]["repo"] == url.replace(URL_SECRET, "***")
    remotes.ok("remote", "init", "rest")

    # While restic waits on a stopped server, its helper can be looked at from outside.
    server.send_signal(signal.SIGSTOP)
    try:
        pushing = start_voltool("push", made["id"], "--remote", "rest", "--json", env=remotes.env)
        helper = wait_for(lambda: _restic_helpers(dk), 60, "restic's helper")[0]
        seen = json.dumps(dk.client.api.inspect_container(helper))
        assert PASSWORD not in seen and key not in seen and URL_SECRET not in seen
    finally:
        server.send_signal(signal.SIGCONT)
    out, err = pushing.communicate(timeout=120)
    assert pushing.returncode == 0, err
    assert PASSWORD not in out + err and key not in out + err and URL_SECRET not in out + err
    (pushed,) = records(out)
    assert not pushed["skipped"]

    remotes.ok("delete", made["id"], "--yes")
    r = remotes.ok("pull", "rest", made["id"], "--json")
    assert all(secret not in r.out + r.err for secret in (PASSWORD, key, URL_SECRET))
    (pulled,) = records(r.out)
    assert pulled["tree_digest"] == made["tree_digest"] and pulled["kind"] == "pulled"
    checked = remotes.ok("verify", "--remote", "rest", "--read-data-subset", "all", "--json")
    assert records(checked.out)[0]["ok"] is True


def _restic_helpers(dk: Docker) -> list[str]:
    """voltool's running helpers that run restic (restic-run.sh), by id."""
    found = dk.client.api.containers(filters={"label": "io.voltool.role=helper"})
    return [c["Id"] for c in found if "voltool-secrets" in json.dumps(c.get("Command", ""))]


def test_a_wrong_password_or_an_unreachable_repository_is_one_line_and_changes_nothing(
    volume: Callable[..., str], remotes: Remotes
) -> None:
    vol = volume("echo x > /v/f")
    made = snapshot_record(vol, env=F2)
    remotes.add_local()
    remotes.ok("remote", "init", "local")
    remotes.ok("push", made["id"], "--remote", "local")
    wrong = remotes.home / "wrong.pass"
    wrong.write_text("not-the-password\n")
    repo = remotes.home / "repo-local"
    remotes.ok("remote", "add", "wrong", str(repo), "--password-file", str(wrong))
    remotes.ok(
        "remote", "add", "nowhere", "rest:http://127.0.0.1:9/", "--password-file", str(wrong)
    )
    before = _local_ids(remotes, vol)
    for args in (
        ("push", made["id"], "--remote", "wrong"),
        ("pull", "wrong", made["id"]),
        ("remote", "snapshots", "nowhere"),
        ("push", made["id"], "--remote", "nowhere"),
        ("pull", "nowhere", made["id"]),
    ):
        r = remotes.run(*args)
        assert r.code == 13, (args, r.err)
        assert len(r.err.strip().splitlines()) == 1 and "Traceback" not in r.err, r.err
        assert "not-the-password" not in r.err
    assert "password" in remotes.run("pull", "wrong", made["id"]).err
    assert _local_ids(remotes, vol) == before
    missing = remotes.run("pull", "local", "0123456789abcdef")
    assert missing.code == 3 and "no snapshot" in missing.err
    nothing = remotes.run("push", f"{vol}-none", "--remote", "local")
    assert nothing.code == 3 and "no snapshot to push" in nothing.err
    assert remotes.run("remote", "init", "local").code == 5


def test_a_damaged_repository_is_reported_and_never_pulled(
    dk: Docker, volume: Callable[..., str], remotes: Remotes
) -> None:
    vol = volume("head -c 1048576 /dev/urandom > /v/f")
    made = snapshot_record(vol, env=F2)
    repo = remotes.add_local()
    remotes.ok("remote", "init", "local")
    remotes.ok("push", made["id"], "--remote", "local")
    assert records(remotes.ok("verify", "--remote", "local", "--json").out)[0]["ok"]
    packs = sorted((repo / "data").rglob("*"), key=lambda p: p.stat().st_size if p.is_file() else 0)
    biggest = packs[-1]  # the pack that holds the file's data
    data = bytearray(biggest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    biggest.write_bytes(bytes(data))

    checked = remotes.run("verify", "--remote", "local", "--read-data-subset", "all")
    assert checked.code == 6, checked.err
    assert "DAMAGED" in checked.out and len(checked.err.strip().splitlines()) == 1
    remotes.ok("delete", made["id"], "--yes")
    pulled = remotes.run("pull", "local", made["id"])
    assert pulled.code == 6, pulled.err
    assert "damaged" in pulled.err, pulled.err
    assert len(pulled.err.strip().splitlines()) == 1, pulled.err
    assert _local_ids(remotes, vol) == set()
    assert not dk.snapshot_volumes(vol) or all("store" in v for v in dk.snapshot_volumes(vol)), (
        "the pull's temporary volume is left"
    )


def test_a_push_killed_while_restic_runs_leaves_no_remote_snapshot(
    dk: Docker,
    volume: Callable[..., str],
    remotes: Remotes,
    rest_server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, server = rest_server
    vol = volume("head -c 2097152 /dev/urandom > /v/f")
    made = snapshot_record(vol, env=F2)
    pw = remotes.home / "rest.pass"
    pw.write_text(PASSWORD)
    remotes.ok("remote", "add", "rest", url, "--password-file", str(pw))
    remotes.ok("remote", "init", "rest")
    hold = remotes.home / "hold"
    pushing = start_voltool(
        "push",
        made["id"],
        "--remote",
        "rest",
        env={**remotes.env, **hold_env("push-started", hold)},
    )
    wait_for(hold.exists, 60, "the push to reach its hold point")
    server.send_signal(signal.SIGSTOP)  # restic will wait on it, mid-push
    try:
        hold.unlink()
        wait_for(lambda: _restic_helpers(dk), 60, "restic's helper")
        pushing.kill()
        pushing.wait(30)
        r = remotes.ok("recover")
        assert not _restic_helpers(dk), r.out
    finally:
        server.send_signal(signal.SIGCONT)
    assert records(remotes.ok("remote", "snapshots", "rest", "--json").out) == []
    assert made["id"] in _local_ids(remotes, vol)
    (pushed,) = records(remotes.ok("push", made["id"], "--remote", "rest", "--json").out)
    assert not pushed["skipped"]


def test_a_pull_killed_before_its_commit_leaves_nothing_usable(
    dk: Docker, volume: Callable[..., str], remotes: Remotes
) -> None:
    vol = volume("echo x > /v/f")
    made = snapshot_record(vol, env=F2)
    remotes.add_local()
    remotes.ok("remote", "init", "local")
    remotes.ok("push", made["id"], "--remote", "local")
    for point in ("pull-restored", "copied"):
        hold = remotes.home / f"hold-{point}"
        pulling = start_voltool(
            "pull", "local", made["id"], env={**remotes.env, **hold_env(point, hold)}
        )
        wait_for(hold.exists, 120, f"the pull to reach {point}")
        pulling.kill()
        pulling.wait(30)
        hold.unlink()
        if point == "pull-restored":
            # As if a hostile tree had written beside restic's target: the temporary volume
            # now reads as a committed snapshot. recover removes it all the same.
            (temp,) = [v for v in dk.snapshot_volumes(vol) if "store" not in v]
            dk.run({temp: "/t"}, "cp /t/r/snapshot.json /t/r/meta.json /t/r/manifest.jsonl /t/")
        states = {s["id"]: s["state"] for s in records(remotes.ok("list", "--json").out)}
        assert [i for i, st in states.items() if st == "complete"] == [made["id"]], states
        remotes.ok("recover")
        assert _local_ids(remotes, vol) == {made["id"]}
        assert [v for v in dk.snapshot_volumes(vol) if "store" not in v] == []


def test_prune_on_a_remote_keeps_what_the_policy_and_pins_say(
    volume: Callable[..., str], remotes: Remotes
) -> None:
    vol = volume("echo 0 > /v/f")
    made = []
    for _ in range(3):
        made.append(snapshot_record(vol, env=F2))
        time.sleep(1.1)  # distinct creation seconds
    remotes.ok("pin", made[0]["id"])
    remotes.add_local()
    remotes.ok("remote", "init", "local")
    remotes.ok("push", vol, "--remote", "local")
    plan = records(
        remotes.ok("prune", "--remote", "local", "--keep-last", "1", "--dry-run", "--json").out
    )
    actions = {p["id"]: p["action"] for p in plan}
    assert actions == {made[0]["id"]: "keep", made[1]["id"]: "remove", made[2]["id"]: "keep"}
    done = records(
        remotes.ok("prune", "--remote", "local", "--keep-last", "1", "--yes", "--json").out
    )
    assert [p["id"] for p in done if p.get("removed")] == [made[1]["id"]]
    left = records(remotes.ok("remote", "snapshots", "local", "--json").out)
    assert sorted(s["id"] for s in left) == sorted([made[0]["id"], made[2]["id"]])
    assert _local_ids(remotes, vol) == {m["id"] for m in made}  # local ones untouched


@pytest.mark.parametrize("point", ["push-started", "push-read"])
def test_a_snapshot_deleted_under_its_push_is_never_taken_for_a_copy(
    volume: Callable[..., str], remotes: Remotes, point: str
) -> None:
    vol = volume("echo x > /v/f && mkdir /v/d && echo y > /v/d/g")
    made = snapshot_record(vol, env=F2)
    remotes.add_local()
    remotes.ok("remote", "init", "local")
    hold = remotes.home / "hold"
    held = {**remotes.env, **hold_env(point, hold)}
    pushing = start_voltool("push", made["id"], "--remote", "local", env=held)
    wait_for(hold.exists, 120, f"the push to reach {point}")
    remotes.ok("delete", made["id"], "--yes")  # before restic read it, or after
    hold.unlink()
    _, err = pushing.communicate(timeout=120)
    assert pushing.returncode == 6, err
    assert "deleted" in err, err
    assert records(remotes.ok("remote", "snapshots", "local", "--json").out) == []


def test_a_helper_cut_short_by_ctrl_c_gets_sigint_and_time_to_end_before_it_goes(
    dk: Docker, volume: Callable[..., str]
) -> None:
    """What lets restic remove its repository lock when a push is interrupted: the helper
    is sent SIGINT and waited for (restic runs as its first process), then removed."""
    import threading

    from voltool.engine.client import Engine, Mount
    from voltool.engine.endpoint import resolve

    vol = volume()
    engine = Engine.connect(resolve(None, None), 600)
    script = (
        "trap 'echo interrupted > /v/said; exit 0' INT; touch /v/ready; while :; do sleep 0.1; done"
    )

    def interrupt_when_ready() -> None:
        wait_for(lambda: "ready" in dk.run({vol: "/v"}, "ls /v"), 60, "the helper to start")
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    labels = {"io.voltool.managed": "true", "io.voltool.role": "helper", "io.voltool.op": "t"}
    with pytest.raises(KeyboardInterrupt):
        engine.run(dk.image, [Mount(vol, "/v")], labels, script, interrupt_grace=10)
    engine.close()
    assert dk.run({vol: "/v"}, "cat /v/said").strip() == "interrupted"
    assert not dk.client.api.containers(all=True, filters={"label": "io.voltool.op=t"})
