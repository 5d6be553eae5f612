from __future__ import annotations

import contextlib
import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import docker
import pytest

from tests.integration import second_daemon
from tests.integration.dockertools import Docker, voltool
from voltool.engine import helper_image
from voltool.engine.client import Engine
from voltool.engine.endpoint import resolve
from voltool.report import Reporter

pytestmark = pytest.mark.engine


def _worker() -> int:
    """This pytest-xdist worker's number (gw2: 2); 0 when the tests run in one process."""
    return int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))


def _cannot(what: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {what}")
    pytest.skip(what)


@pytest.fixture(scope="session")
def engine_client() -> Iterator[docker.DockerClient]:
    """This test process's engine.

    Run in parallel (pytest -n N), worker 0 uses the machine's engine and every other
    worker a private dockerd (second_daemon: its own data root, socket and bridge), so
    that tests never see each other's stores, helpers or keepers: `voltool list` mounts
    every store of its engine, and a volume in use cannot be removed. With
    VOLTOOL_TEST_PRIVATE_ENGINE=1, worker 0 too (or a run in one process) gets one, and
    the machine's engine is left alone. A private engine gets its helper images like any
    fresh one (the `dk` and `agent` fixtures), and is stopped and removed at the end."""
    private = None
    n = _worker()
    if n > 0 or os.environ.get("VOLTOOL_TEST_PRIVATE_ENGINE") == "1":
        # Unique per process: two runs at once on one machine must not share a bridge.
        # The address matters little (helpers run with no network) but must be valid.
        bridge, third = f"vt{os.getpid()}w{n}"[:15], 1 + (os.getpid() * 8 + n) % 250
        try:
            private = second_daemon.start(bridge=bridge, address=f"10.214.{third}.1/24")
        except second_daemon.CannotStart as e:
            _cannot(f"worker {n} cannot start an engine of its own: {e}")
        os.environ["DOCKER_HOST"] = private.host
    try:
        try:
            client = docker.from_env()
            client.ping()
        except Exception as e:
            _cannot(f"no Docker Engine answers: {e}")
        yield client
        client.close()
    finally:
        if private is not None:
            private.stop()
            del os.environ["DOCKER_HOST"]


@pytest.fixture(scope="session", autouse=True)
def no_volumes_left_behind(engine_client: docker.DockerClient, dk: Docker) -> Iterator[None]:
    """At the end of the run, no volume this run made, nor one named after one (`<vol>-x`), nor
    a snapshot of either may remain. Other runs on the same engine are none of its business."""
    yield
    made = tuple(dk.made)
    left = (
        [
            v.name
            for v in engine_client.volumes.list()
            if v.name.startswith(made)
            or (v.attrs.get("Labels") or {}).get("io.voltool.snapshot.source", "").startswith(made)
        ]
        if made
        else []
    )
    assert not left, f"tests left volumes behind: {left}"


def _has_docker0() -> bool:
    return subprocess.run(["ip", "link", "show", "docker0"], capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def log_none_daemon(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[second_daemon.SecondDaemon]:
    """A second dockerd of our own whose default log driver is `none`, with the helper image.

    Skipped where it cannot start, except with CI=true, where that fails. Stopped,
    and its bridge and directories removed, at the end; the machine's engine keeps
    its docker0.
    """
    had_docker0 = _has_docker0()
    try:
        daemon = second_daemon.start(
            "--log-driver",
            "none",
            bridge=f"vl{os.getpid()}w{_worker()}"[:15],
            address=f"10.215.{1 + (os.getpid() * 8 + _worker()) % 250}.1/24",
        )
    except second_daemon.CannotStart as e:
        _cannot(f"a second dockerd cannot start: {e}")
    try:
        state = tmp_path_factory.mktemp("log-none")
        r = voltool(
            "helper",
            "--build",
            env={
                "DOCKER_HOST": daemon.host,
                "VOLTOOL_STATE_DIR": str(state / "state"),
                "VOLTOOL_CONFIG": str(state / "no-config.toml"),
            },
        )
        assert r.code == 0, f"voltool helper --build against the second dockerd: {r.err}"
        yield daemon
    finally:
        daemon.stop()
        assert not daemon.root.exists(), f"{daemon.root} is still there"
        assert not second_daemon.bridge_exists(daemon.bridge), f"{daemon.bridge} is still there"
        assert not had_docker0 or _has_docker0(), "the engine's docker0 bridge is gone"


@pytest.fixture(scope="session")
def dk(engine_client: docker.DockerClient) -> Docker:
    engine = Engine.connect(resolve(None, None), 600)
    image = helper_image.ensure(engine, "busybox", "/bin/busybox", Reporter())
    return Docker(engine_client, image)


@pytest.fixture(scope="session")
def agent(dk: Docker) -> Iterator[str]:
    """The agent image (built offline the first time), for format-2 tests."""
    from voltool.engine import agent_image

    engine = Engine.connect(resolve(None, None), 600)
    try:
        yield agent_image.ensure(engine, "/bin/busybox", Reporter())
    finally:
        engine.close()


@pytest.fixture
def volume(dk: Docker) -> Iterator[Callable[..., str]]:
    """Make uniquely named volumes; remove them, their snapshots and their users afterwards.

    Fails the test if voltool left a helper or lock container behind.
    """
    made: list[str] = []
    dk.scope = made

    def make(
        script: str | None = None,
        labels: dict[str, str] | None = None,
        driver_opts: dict[str, str] | None = None,
    ) -> str:
        name = f"vt-{uuid.uuid4().hex[:12]}"
        dk.client.volumes.create(name, labels=labels or {}, driver_opts=driver_opts or {})
        made.append(name)
        dk.made.append(name)
        if script:
            dk.run({name: "/v"}, script)
        return name

    yield make
    leftovers = dk.managed_containers()
    # Only what concerns this test's volumes: other tests (or a developer's own
    # voltool) may be using the same engine at the same time.
    related = dk.related(made + dk.also)
    for c in dk.client.api.containers(all=True, filters={"label": "io.voltool.managed=true"}):
        if dk.ours(c, related):
            # NotFound, or 409 "removal already in progress": gone or going either way.
            with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
                dk.client.api.remove_container(c["Id"], force=True)
    for name in made + dk.also:
        for c in dk.client.containers.list(all=True, filters={"volume": name}):
            c.remove(force=True)
        for snap in dk.snapshot_volumes(name):
            dk.client.volumes.get(snap).remove(force=True)
        with contextlib.suppress(docker.errors.NotFound):  # a test may remove its own
            dk.client.volumes.get(name).remove(force=True)
    dk.scope, dk.also = [], []
    assert not leftovers, f"voltool left containers behind: {leftovers}"


@pytest.fixture
def container(dk: Docker) -> Iterator[Callable[..., str]]:
    """Start long-running containers that use volumes; removed afterwards."""
    made: list[str] = []

    def start(
        volumes: list[str], script: str = "while true; do date >> /v0/log; sleep 0.05; done"
    ) -> str:
        c = dk.client.containers.run(
            dk.image,
            ["-c", script],
            entrypoint=["/bin/sh"],
            volumes={v: {"bind": f"/v{i}", "mode": "rw"} for i, v in enumerate(volumes)},
            network_mode="none",
            detach=True,
            name=f"vt-app-{uuid.uuid4().hex[:8]}",
        )
        made.append(c.id)
        return str(c.name)

    yield start
    for cid in made:
        with contextlib.suppress(docker.errors.NotFound):
            dk.client.containers.get(cid).remove(force=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[dict[str, str]]:
    """Driver options for a volume on a filesystem of its own: 64 MiB of ext4 on a loop
    device (room for the pre-flight of 24 MiB of data plus its slack, until a test fills
    it up behind a restore's back). Unlike tmpfs, its data outlives its containers."""
    image = tmp_path / "fs.img"
    with open(image, "wb") as f:
        f.truncate(64 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-m", "0", str(image)], check=True)
    device = subprocess.run(
        ["losetup", "-f", "--show", str(image)], check=True, capture_output=True, text=True
    ).stdout.strip()
    try:
        yield {"type": "ext4", "device": device}
    finally:
        subprocess.run(["losetup", "-d", device], check=False)


BIG = "head -c 25165824 /dev/urandom > /v/big && echo small > /v/small"
FILL = "dd if=/dev/zero of=/v/filler bs=1M 2>/dev/null; sync; df -k /v | tail -n 1"
