"""Keepers protect snapshot volumes from `docker volume prune`; doctor keeps checking.

Every prune here is scoped to this test's own volumes (a label only they
carry): the engine is shared, and other snapshots on it must not be touched.
Recover is run for real only through the function it calls per snapshot, so
that it never adds keepers to snapshots that other tests are making.
"""

from __future__ import annotations

import contextlib
import io
import json
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.dockertools import F1, Docker, Result, records, voltool
from tests.integration.test_cli import make_snapshot, one_line_error
from voltool import config
from voltool.engine import keepers
from voltool.ops import recover
from voltool.report import Reporter
from voltool.runtime import Runtime, open_runtime

pytestmark = pytest.mark.engine


# Keepers of format-1 snapshot volumes (a store's keeper: test_store).
@pytest.fixture(autouse=True)
def format_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in F1.items():
        monkeypatch.setenv(name, value)


KEEPER = {"io.voltool.role": "keeper"}


def keepers_of(dk: Docker, snapshot_volume: str) -> list[dict[str, Any]]:
    found = dk.client.api.containers(
        all=True, filters={"label": f"io.voltool.keeper.volume={snapshot_volume}"}
    )
    return list(found)


def engine_wide(*args: str, env: dict[str, str] | None = None) -> Result:
    """Run a command that reads every snapshot on the engine through one helper.

    On a shared engine, another test's teardown may remove that helper (it
    mounts that test's snapshots too): such a run is repeated, nothing else.
    """
    for _ in range(5):
        r = voltool(*args, env=env)
        if "marked for removal" not in r.err and "No such container" not in r.err:
            break
    assert "Traceback" not in r.err
    return r


def doctor(*args: str, env: dict[str, str] | None = None) -> tuple[int, list[dict[str, Any]]]:
    r = engine_wide(*args, "doctor", "--json", env=env)
    return r.code, records(r.out)


@pytest.fixture
def rt() -> Iterator[Runtime]:
    runtime = open_runtime(config.load(), Reporter())
    yield runtime
    runtime.engine.close()


def test_volume_prune_leaves_every_snapshot_in_place_and_restorable(
    dk: Docker, volume: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume("echo one > /v/a && mkdir /v/d && echo two > /v/d/b")
    manual = make_snapshot(vol)
    r = voltool("export", str(manual["id"]), "-o", str(tmp_path / "x.tar.zst"))
    assert r.code == 0, r.err
    r = voltool("import", str(tmp_path / "x.tar.zst"), "--json")
    assert r.code == 0, r.err
    imported = json.loads(r.out)
    dk.run({vol: "/v"}, "echo changed > /v/a")
    r = voltool("restore", str(manual["id"]), "--yes", "--json")
    assert r.code == 0, r.err
    pre_restore = json.loads(r.out)["pre_restore_snapshot"]
    snaps = sorted(dk.snapshot_volumes(vol))
    ids = [str(manual["id"]), str(imported["id"]), str(pre_restore)]
    assert snaps == sorted(f"voltool-snap-{i}" for i in ids)

    # Every snapshot volume has one keeper: created, never started, no network,
    # mounting it read-only; not among the containers voltool must clean up.
    for s in snaps:
        (k,) = keepers_of(dk, s)
        assert k["State"] == "created"
        assert k["Labels"]["io.voltool.managed"] == "true"
        assert k["Labels"]["io.voltool.role"] == "keeper"
        assert k["Names"] == [f"/voltool-keep-{s.removeprefix('voltool-snap-')}"]
        assert [(m["Name"], m["RW"]) for m in k["Mounts"]] == [(s, False)]
        assert k["HostConfig"]["NetworkMode"] == "none"
    assert not [n for n in dk.managed_containers() if n.startswith("voltool-keep-")]

    # A control: an unused volume that carries the same label IS pruned, so the
    # prune below really prunes.
    control = f"vt-{uuid.uuid4().hex[:12]}"
    dk.client.volumes.create(control, labels={"io.voltool.snapshot.source": vol})
    try:
        pruned = dk.client.volumes.prune(filters={"label": f"io.voltool.snapshot.source={vol}"})
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            dk.client.volumes.get(control).remove()
    assert pruned["VolumesDeleted"] == [control]
    assert sorted(dk.snapshot_volumes(vol)) == snaps

    r = voltool("verify", *ids)
    assert r.code == 0, r.out + r.err
    r = voltool("restore", str(pre_restore), "--to", vol, "--yes", "--no-safety-snapshot")
    assert r.code == 0, r.err
    assert dk.read(vol, "a") == b"changed\n"


def test_delete_removes_the_volume_and_its_keeper(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume("echo a > /v/a")
    snap = make_snapshot(vol)
    svol = str(snap["volume"])
    assert len(keepers_of(dk, svol)) == 1

    # A container of someone else's that mounts the snapshot: delete refuses,
    # and the snapshot stays protected.
    user = dk.client.containers.create(
        dk.image, ["true"], volumes={svol: {"bind": "/s", "mode": "ro"}}, network_mode="none"
    )
    try:
        one_line_error(voltool("delete", "--yes", str(snap["id"])), 4, "in use by a container")
    finally:
        user.remove(force=True)
    assert dk.snapshot_volumes(vol) == [svol]
    assert len(keepers_of(dk, svol)) == 1

    r = voltool("delete", "--yes", str(snap["id"]))
    assert r.code == 0, r.err
    assert dk.snapshot_volumes(vol) == []
    assert keepers_of(dk, svol) == []


def test_a_snapshot_without_keeper_is_reported_and_recover_protects_it(
    dk: Docker, volume: Callable[..., str], rt: Runtime
) -> None:
    vol = volume("echo a > /v/a")
    snap = make_snapshot(vol)
    sid, svol = str(snap["id"]), str(snap["volume"])
    (k,) = keepers_of(dk, svol)
    dk.client.api.remove_container(k["Id"], force=True)  # as an older voltool made it

    warning = f"snapshot {sid} of {vol!r} is not protected from docker volume prune"
    code, checks = doctor()
    assert code == 0
    assert {"name": "leftovers", "status": "warn", "detail": warning, "fix": "voltool recover"} in (
        checks
    )
    # Without a helper image, too.
    code, checks = doctor("--helper-image", f"vt-missing-{uuid.uuid4().hex[:8]}:1")
    assert code == 0
    assert any(c["detail"] == warning for c in checks), checks

    r = engine_wide("recover", "--dry-run")
    assert r.code == 0, r.err
    assert f"would protect snapshot {sid} of {vol!r} from docker volume prune" in r.out

    (mine,) = [s for s in recover.find_leftovers(rt).unprotected if s.id == sid]
    recover.protect_snapshot(rt, mine)
    assert len(keepers_of(dk, svol)) == 1
    assert all(s.id != sid for s in recover.find_leftovers(rt).unprotected)
    code, checks = doctor()
    assert not any(c["detail"] == warning for c in checks)


def test_orphaned_keepers_and_incomplete_snapshots_without_helper_image(
    dk: Docker, volume: Callable[..., str], rt: Runtime
) -> None:
    vol = volume()
    # An incomplete snapshot whose creator is gone, protected by its keeper:
    # doctor finds it through the keeper even with no helper image.
    sid = uuid.uuid4().hex[:16]
    svol = dk.fake_snapshot_volume(sid, vol)
    keepers.protect(rt, svol, sid)
    # A keeper of a volume that is no snapshot volume (its own is gone).
    orphan = dk.client.containers.create(
        dk.image,
        ["true"],
        labels={
            "io.voltool.managed": "true",
            "io.voltool.role": "keeper",
            "io.voltool.keeper.volume": vol,
        },
        volumes={vol: {"bind": "/snapshot", "mode": "ro"}},
        network_mode="none",
        name=f"vt-keep-{uuid.uuid4().hex[:8]}",
    )
    code, checks = doctor("--helper-image", f"vt-missing-{uuid.uuid4().hex[:8]}:1")
    assert code == 0
    details = [c["detail"] for c in checks if c["name"] == "leftovers"]
    assert f"incomplete snapshot {sid} of {vol!r}" in details
    assert f"keeper {orphan.name} of a volume that is gone" in details

    left = recover.find_leftovers(rt)
    (found,) = [c for c in left.keepers if c.id == orphan.id]
    keepers.remove_orphan(rt, found)
    with pytest.raises(docker.errors.NotFound):
        dk.client.containers.get(orphan.id)
    (incomplete,) = [s for s in left.incomplete if s.id == sid]
    recover._remove_incomplete(rt, incomplete)
    assert dk.snapshot_volumes(vol) == [] and keepers_of(dk, svol) == []


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("timeout = \n", "cannot read configuration file"),
        ("bogus = 1\n", "unknown setting(s) in"),
        ('timeout = "soon"\n', "timeout from"),
        ("[prune]\nkeep-daily = -1\n", "keep-daily"),
    ],
)
def test_doctor_reports_a_broken_config_and_checks_the_rest(
    tmp_path: Path, content: str, problem: str
) -> None:
    path = tmp_path / "config.toml"
    path.write_text(content)
    env = {"VOLTOOL_CONFIG": str(path)}
    code, checks = doctor(env=env)
    assert code == 1
    (bad,) = [c for c in checks if c["name"] == "config"]
    assert bad["status"] == "fail" and problem in bad["detail"], bad
    assert bad["fix"] == f"edit {path}"
    names = {c["name"] for c in checks}
    assert {"engine", "helper image", "state directory", "leftovers"} <= names
    # What others left on a shared engine (containers, leftovers) is none of this test's.
    assert all(c["status"] != "fail" for c in checks if c["name"] not in ("config", "containers"))
    r = voltool("doctor", env=env)
    assert r.code == 1 and "FAIL  config: " in r.out and "ok    engine: " in r.out


@pytest.fixture
def shell_less_image(dk: Docker) -> Iterator[str]:
    """An image holding one static file, /bin/true (a busybox), and no /bin/sh."""
    tag = f"vt-noshell-{uuid.uuid4().hex[:8]}:1"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/true")
    dk.client.api.import_image_from_data(buf.getvalue(), repository=tag.split(":")[0], tag="1")
    yield tag
    for c in dk.client.api.containers(all=True, filters={"ancestor": tag}):
        dk.client.api.remove_container(c["Id"], force=True)
    dk.client.images.remove(tag, force=True)


def test_an_image_without_a_shell_is_refused(
    dk: Docker, volume: Callable[..., str], shell_less_image: str
) -> None:
    vol = volume("echo a > /v/a")
    why = f"helper image {shell_less_image!r} cannot run voltool's helpers: it has no /bin/sh"
    one_line_error(voltool("--helper-image", shell_less_image, "snapshot", vol), 2, why)
    one_line_error(voltool("--helper-image", shell_less_image, "list", vol), 2, why)
    assert dk.snapshot_volumes(vol) == []
    assert dk.client.api.containers(all=True, filters={"ancestor": shell_less_image}) == []

    code, checks = doctor("--helper-image", shell_less_image)
    assert code == 1
    (image,) = [c for c in checks if c["name"] == "helper image"]
    assert image["status"] == "fail" and "it has no /bin/sh" in image["detail"]
    assert any(c["name"] == "leftovers" for c in checks)
