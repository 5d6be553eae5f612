"""The agent image against a real engine: built offline (or reused by its tag), checked in
a container with no network, reused on a second build, and removed when its check fails."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator

import docker
import pytest

from tests.integration.dockertools import Docker, records, voltool
from voltool.engine import agent_image, hostpython
from voltool.engine.client import Engine
from voltool.engine.endpoint import resolve
from voltool.errors import AgentImageFailed
from voltool.report import Reporter

pytestmark = pytest.mark.engine

BUSYBOX = "/bin/busybox"


class Said(Reporter):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def note(self, message: str) -> None:
        self.lines.append(message)

    def warn(self, message: str) -> None:
        self.lines.append(f"warning: {message}")


@pytest.fixture(scope="module")
def engine(dk: Docker) -> Iterator[Engine]:
    e = Engine.connect(resolve(None, None), 600)
    yield e
    e.close()


@pytest.fixture(scope="module")
def image(engine: Engine) -> str:
    """The agent image, built offline here (no registry answers) or reused by its tag."""
    return agent_image.ensure(engine, BUSYBOX, Reporter())


def run(client: docker.DockerClient, image: str, script: str) -> tuple[int, str]:
    """Run `sh -c script` in a container of `image` with no network; removed afterwards."""
    c = client.containers.create(
        image,
        ["-c", script],
        entrypoint=["/bin/sh"],
        network_mode="none",
        name=f"vt-agent-{uuid.uuid4().hex[:8]}",
    )
    try:
        c.start()
        code = c.wait(timeout=60)["StatusCode"]
        return int(code), c.logs(stdout=True, stderr=True).decode()
    finally:
        c.remove(force=True)


def test_the_image_runs_python_with_openssl_and_the_agent(
    engine_client: docker.DockerClient, engine: Engine, image: str
) -> None:
    assert image.startswith("voltool/helper:agent-")
    info = engine.image(image)
    assert info.labels["io.voltool.image"] == "agent"
    origin = info.labels["io.voltool.helper.origin"]
    assert origin == f"offline-host-python {hostpython.host_python().version}" or origin.startswith(
        "python:"
    )
    assert info.size < 150e6, f"the agent image is {info.size / 1e6:.0f} MB"

    code, out = run(
        engine_client,
        image,
        "python3 -I -c 'import hashlib, sys; print(type(hashlib.sha256()).__module__, sys.prefix)'",
    )
    assert code == 0, out
    module, prefix = out.split()
    assert module == "_hashlib"
    assert prefix == "/usr/local"

    code, out = run(engine_client, image, "python3 -I -m voltool_agent selftest")
    assert code == 0, out
    selftest = json.loads(out)
    assert selftest["openssl"] is True and selftest["sha256"] == "_hashlib.HASH"

    code, out = run(engine_client, image, "echo ok; test -d /tmp -a -w /tmp && ls -ld /tmp")
    assert code == 0 and out.startswith("ok\n") and out.split("\n")[1].startswith("drwxrwxrwt")


def test_the_image_has_no_network(engine_client: docker.DockerClient, image: str) -> None:
    code, out = run(
        engine_client,
        image,
        "python3 -I -c 'import socket; print(sorted(n for _, n in socket.if_nameindex()))'",
    )
    assert code == 0 and out.strip() == "['lo']", out


def test_a_second_build_reuses_the_image(engine: Engine, image: str) -> None:
    before = engine.image_id(image)
    said = Said()
    started = time.monotonic()
    again = agent_image.ensure(engine, BUSYBOX, said)
    assert again == image and engine.image_id(again) == before
    assert time.monotonic() - started < 2 and said.lines == []
    assert agent_image.check(engine, image) is None
    status = agent_image.status(engine, BUSYBOX)
    assert status.image == image and "runs the agent" in status.how


def test_older_agent_images_go_unless_a_container_uses_one(
    engine_client: docker.DockerClient, engine: Engine, image: str
) -> None:
    older, used = (f"voltool/helper:agent-{c * 12}" for c in "01")
    # Images of their own, as an older agent's are (a tag of `image` would only be untagged).
    base = engine_client.containers.create(image, ["true"], name=f"vt-old-{uuid.uuid4().hex[:8]}")
    try:
        for name in (older, used):
            base.commit("voltool/helper", name.split(":")[1], changes=[f"LABEL vt.old={name}"])
    finally:
        base.remove(force=True)
    user = engine_client.containers.create(used, ["true"], name=f"vt-old-{uuid.uuid4().hex[:8]}")
    try:
        agent_image._remove_older(engine, image)
        tags = engine.image_tags("voltool/helper")
        assert older not in tags and used in tags and image in tags
    finally:
        user.remove(force=True)
        engine.remove_image(used)


def test_helper_build_and_status_name_both_images(image: str) -> None:
    r = voltool("helper", "--build")
    assert r.code == 0, r.err
    assert f"agent image {image}" in r.out and "busybox" in r.out
    r = voltool("helper")
    assert r.code == 0, r.err
    assert f"agent image: {image}" in r.out and "runs the agent" in r.out
    r = voltool("doctor", "--json")
    checks = {c["name"]: c for c in records(r.out)}
    assert checks["agent image"]["status"] == "ok", checks["agent image"]
    assert image in checks["agent image"]["detail"]


def test_an_image_that_fails_its_check_is_removed(
    engine_client: docker.DockerClient,
    engine: Engine,
    image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A recipe of its own (a tag no other test uses) whose root filesystem lacks libcrypto.
    monkeypatch.setattr(agent_image, "RECIPE", f"test-{uuid.uuid4().hex}")
    real_plan = hostpython.plan

    def without_libcrypto(
        py: hostpython.HostPython, binaries: Iterable[str] = ()
    ) -> hostpython.Plan:
        plan = real_plan(py, binaries=binaries)
        kept = [e for e in plan.entries if "libcrypto" not in e.path]
        return hostpython.Plan(kept, plan.library_path)

    monkeypatch.setattr(hostpython, "plan", without_libcrypto)
    monkeypatch.setattr(agent_image, "_derive", lambda *a: False)  # offline, whatever the network
    files = agent_image.agent_files()
    tag = agent_image.offline_tag(files, hostpython.host_python(), BUSYBOX)
    try:
        with pytest.raises(AgentImageFailed, match="not OpenSSL's") as e:
            agent_image.ensure(engine, BUSYBOX, Reporter())
        assert "it was removed" in str(e.value) and "\n" not in str(e.value)
        assert not engine.image_exists(tag)
        left = [
            t
            for i in engine_client.images.list(name="voltool/helper")
            for t in i.tags
            if t.startswith(f"{tag}-unchecked")
        ]
        assert left == []
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            engine_client.images.remove(tag, force=True)
