"""Restoring every volume of a Compose project together: one confirmation, one lock set,
one stop of the containers, and all members rolled back or all rolled forward."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.dockertools import (
    CHANGES,
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
from voltool.errors import ExitCode

pytestmark = pytest.mark.engine


@dataclass
class Project:
    name: str
    volumes: list[str]  # sorted, as the group is restored
    both: str  # a container using every volume
    one: str  # a container using the first volume only
    snapshots: list[Listing]  # each volume's tree when the group snapshot was taken
    current: list[Listing]  # ... and after the changes made since


@pytest.fixture
def project(dk: Docker, volume: Callable[..., str], container: Callable[..., str]) -> Project:
    name = f"vtp{uuid.uuid4().hex[:10]}"
    labels = {"com.docker.compose.project": name}
    vols = sorted([volume(SMALL_TREE, labels=labels), volume(SMALL_TREE, labels=labels)])
    dk.run({vols[1]: "/v"}, "echo second > /v/only-in-second")
    snapshots = [dk.listing(v) for v in vols]
    r = voltool("snapshot", "--project", name, "--name", "pre")
    assert r.code == 0, r.err
    for v in vols:
        dk.run({v: "/v"}, CHANGES)
    both = container(vols, IDLE_APP)
    one = container(vols[:1], IDLE_APP)
    return Project(name, vols, both, one, snapshots, [dk.listing(v) for v in vols])


def _starts(dk: Docker, name: str, since: dt.datetime) -> int:
    """How many times the engine started container `name` since `since`."""
    events = dk.client.events(
        since=since,
        until=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1),
        filters={"container": name, "event": "start"},
        decode=True,
    )
    return len(list(events))


def _check(dk: Docker, p: Project, restored: bool) -> None:
    want = p.snapshots if restored else p.current
    for vol, tree in zip(p.volumes, want, strict=True):
        got = dk.listing(vol)
        assert got.entries == tree.entries, vol  # no staging, old or marker entry either
        assert got.links == tree.links, vol
    assert dk.status(p.both) == "running"
    assert dk.status(p.one) == "running"
    assert dk.managed_containers() == []


def test_a_project_is_restored_together(dk: Docker, project: Project) -> None:
    since = dt.datetime.now(dt.UTC)
    dry = voltool("restore", "--name", "pre", "--project", project.name, "--dry-run", "--json")
    assert dry.code == 0, dry.err
    assert [p["target"] for p in records(dry.out)] == project.volumes
    r = voltool("restore", "--name", "pre", "--project", project.name, "--yes", "--json")
    assert r.code == 0, r.err
    results = records(r.out)
    assert [x["target"] for x in results] == project.volumes
    assert len({x["op"] for x in results}) == 1  # one operation
    # One downtime window: each container stopped and started once, for every swap.
    assert _starts(dk, project.both, since) == 1
    assert _starts(dk, project.one, since) == 1
    assert sorted(results[0]["restarted"]) == sorted([project.both, project.one])
    _check(dk, project, restored=True)
    for vol, before in zip(project.volumes, project.current, strict=True):
        (pre,) = [
            s for s in records(voltool("list", "--json", vol).out) if s["kind"] == "pre-restore"
        ]
        assert pre["id"] in {x["pre_restore_snapshot"] for x in results}
        assert dk.listing(pre["volume"], in_snapshot(pre, "data")).entries == before.entries


def test_the_text_output_names_each_volume_and_how_to_undo(dk: Docker, project: Project) -> None:
    r = voltool("restore", "--name", "pre", "--project", project.name, "--yes")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    for vol in project.volumes:
        assert any(x.startswith("restored snapshot ") and x.endswith(f" into {vol}") for x in lines)
        assert any(x.startswith(f"the old data of {vol} is pre-restore snapshot ") for x in lines)
        assert any(x.startswith("to undo: voltool restore ") and x.endswith(vol) for x in lines)
    assert sum(x.startswith("restarted ") for x in lines) == 1


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--project", "P"], 2, "--project goes with --name"),
        (["--name", "pre", "--project", "P", "--to", "xy"], 2, "--to and --if-match"),
        (["--name", "pre", "--project", "P"], 11, "no terminal to confirm on"),
    ],
)
def test_bad_group_requests_change_nothing(
    dk: Docker, project: Project, args: list[str], code: int, message: str
) -> None:
    args = [project.name if a == "P" else a for a in args]
    r = voltool("restore", *args)
    assert (r.code, "Traceback" in r.err) == (code, False), r.err
    assert message in r.err
    _check(dk, project, restored=False)


def test_a_volume_without_the_named_snapshot_stops_the_whole_group(
    dk: Docker, volume: Callable[..., str], project: Project
) -> None:
    late = volume("echo late > /v/f", labels={"com.docker.compose.project": project.name})
    r = voltool("restore", "--name", "pre", "--project", project.name, "--yes")
    assert r.code == 3, r.err
    assert f"no snapshot named 'pre' of {late}" in r.err
    _check(dk, project, restored=False)


def _kill_at(step: str, p: Project, tmp_path: Path) -> None:
    hold = tmp_path / f"hold-{step}"
    proc = start_voltool(
        "restore", "--name", "pre", "--project", p.name, "--yes", env=hold_env(step, hold)
    )
    wait_for(hold.exists, timeout=120, what=f"the restore to reach {step}")
    proc.kill()
    proc.wait(30)


@pytest.mark.parametrize(
    ("step", "forward"),
    [("staged", False), ("stop", False), ("swap", True), ("member-swapped", True)],
)
def test_a_killed_group_restore_is_recovered_as_one(
    dk: Docker, project: Project, tmp_path: Path, step: str, forward: bool
) -> None:
    """ "staged" is the first member's (the second not staged yet); "member-swapped" is
    after the first member's swap, before the second's."""
    _kill_at(step, project, tmp_path)
    # From another state directory: the records in the engine are enough.
    env = {"VOLTOOL_STATE_DIR": str(Path(os.environ["VOLTOOL_STATE_DIR"]).parent / "elsewhere")}
    dry = voltool("recover", *project.volumes, "--dry-run", env=env)
    assert dry.code == 0, dry.err
    r = voltool("recover", *project.volumes, env=env)
    assert r.code == 0, r.err
    assert r.out.splitlines() == [line.removeprefix("would ") for line in dry.out.splitlines()]
    _check(dk, project, restored=forward)
    pre = [
        s
        for v in project.volumes
        for s in records(voltool("list", "--json", v).out)
        if s["kind"] == "pre-restore"
    ]
    if forward:
        assert sorted(s["source"] for s in pre) == project.volumes
        for s in pre:
            i = project.volumes.index(s["source"])
            kept = dk.listing(s["volume"], in_snapshot(s, "data"))
            assert kept.entries == project.current[i].entries
    else:
        assert pre == []
    assert voltool("recover", *project.volumes).out.strip() == "nothing to recover"


def test_one_confirmation_names_the_project(dk: Docker, project: Project) -> None:
    from tests.integration.test_progress import _Pty

    t = _Pty("restore", "--name", "pre", "--project", project.name)
    prompt = rf"Type the Compose project name \({project.name}\) to restore into its 2 volumes"
    text = t.read_until(prompt)
    assert f"restore Compose project {project.name} together (2 volumes" in text
    t.write(project.volumes[0] + "\n")  # a volume's name is not the answer
    t.read_until("declined; nothing was changed")
    assert t.close() == int(ExitCode.DECLINED)
    _check(dk, project, restored=False)
    t = _Pty("restore", "--name", "pre", "--project", project.name)
    t.read_until(prompt)
    t.write(project.name + "\n")
    t.read_until(r"to undo: voltool restore \S+ --to " + project.volumes[1])
    assert t.close() == 0
    _check(dk, project, restored=True)
