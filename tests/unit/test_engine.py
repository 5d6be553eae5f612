"""The engine seam without an engine: image references, helper output, a full filesystem."""

from __future__ import annotations

from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

import docker.errors
import pytest
import requests

from voltool.engine import client as eng
from voltool.engine.client import Engine, parse_image_ref
from voltool.engine.endpoint import Endpoint
from voltool.errors import EngineError, ExitCode, NoSpace

DIGEST = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("ref", "repository", "tag"),
    [
        ("busybox", "busybox", None),
        ("busybox:1.36", "busybox", "1.36"),
        ("library/busybox:latest", "library/busybox", "latest"),
        ("registry:5000/busybox", "registry:5000/busybox", None),
        ("registry:5000/ns/busybox:1.36", "registry:5000/ns/busybox", "1.36"),
        ("localhost:5000/busybox:1.36", "localhost:5000/busybox", "1.36"),
        (f"busybox@{DIGEST}", "busybox", DIGEST),
        (f"registry:5000/ns/busybox@{DIGEST}", "registry:5000/ns/busybox", DIGEST),
        ("voltool/helper:busybox-3d9f2889d678", "voltool/helper", "busybox-3d9f2889d678"),
    ],
)
def test_image_references_split_into_repository_and_tag(
    ref: str, repository: str, tag: str | None
) -> None:
    assert parse_image_ref(ref) == (repository, tag)


class FakeAPI:
    """The few docker-py APIClient calls the tests below need, recorded."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.put_error: Exception | None = None
        self.mounts: list[dict[str, Any]] = []

    def pull(self, repository: str, tag: str, stream: bool, decode: bool) -> Iterable[Any]:
        self.calls.append(("pull", (repository, tag)))
        return iter([{"status": "done"}])

    def import_image_from_data(self, data: bytes, repository: str, tag: str, changes: Any) -> None:
        self.calls.append(("import", (repository, tag)))

    def inspect_image(self, ref: str) -> dict[str, Any]:
        return {"Id": "sha256:1"}

    def put_archive(self, cid: str, path: str, chunks: Iterable[bytes]) -> bool:
        if self.put_error:
            raise self.put_error
        return True

    def inspect_container(self, cid: str) -> dict[str, Any]:
        return {"Mounts": self.mounts}


def make_engine() -> tuple[Engine, FakeAPI]:
    api = FakeAPI()
    client: Any = SimpleNamespace(api=api)
    return Engine(client, Endpoint("unix:///nowhere.sock", "test")), api


@pytest.mark.parametrize(
    ("ref", "sent"),
    [
        ("busybox", ("busybox", "latest")),
        ("registry:5000/busybox", ("registry:5000/busybox", "latest")),
        ("registry:5000/ns/busybox:1.36", ("registry:5000/ns/busybox", "1.36")),
        (f"busybox@{DIGEST}", ("busybox", DIGEST)),
    ],
)
def test_pull_sends_the_parsed_repository_and_tag(ref: str, sent: tuple[str, str]) -> None:
    engine, api = make_engine()
    engine.pull(ref, lambda status: None)
    assert api.calls == [("pull", sent)]


def test_import_image_tags_what_the_reference_names() -> None:
    engine, api = make_engine()
    engine.import_image(b"", "registry:5000/voltool/helper:busybox-1", [])
    assert api.calls == [("import", ("registry:5000/voltool/helper", "busybox-1"))]


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError("500 Server Error", response, explanation)


def test_a_full_filesystem_during_put_archive_is_no_space_naming_the_volume() -> None:
    engine, api = make_engine()
    api.put_error = api_error(
        500, "Error processing tar file(exit status 1): write /v/x: no space left on device"
    )
    api.mounts = [
        {"Type": "volume", "Name": "snap", "Destination": "/snap"},
        {"Type": "volume", "Name": "target", "Destination": "/v"},
    ]
    with pytest.raises(NoSpace) as caught:
        engine.put_archive("c" * 64, "/v", [b""])
    assert caught.value.exit_code == ExitCode.NO_SPACE
    assert str(caught.value) == "no space left on volume 'target' (writing an archive to /v)"


def test_a_full_filesystem_outside_any_volume_names_the_path() -> None:
    engine, api = make_engine()
    api.put_error = api_error(500, "write /tmp/x: No space left on device")
    with pytest.raises(NoSpace, match=r"^no space left on the filesystem of /tmp \("):
        engine.put_archive("c" * 64, "/tmp", [b""])


def test_other_put_archive_failures_stay_engine_errors() -> None:
    engine, api = make_engine()
    api.put_error = api_error(500, "Error processing tar file: unexpected EOF")
    with pytest.raises(EngineError) as caught:
        engine.put_archive("c" * 64, "/v", [b""])
    assert not isinstance(caught.value, NoSpace)
    assert "unexpected EOF" in str(caught.value)


OUT, ERR = 1, 2


def test_helper_output_is_demultiplexed() -> None:
    frames = [(OUT, b"a"), (ERR, b"oops\n"), (OUT, b"b\n")]
    assert eng._collect(frames) == (b"ab\n", b"oops\n", False)


def test_helper_output_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(eng, "RUN_STDOUT_MAX", 10)
    monkeypatch.setattr(eng, "RUN_STDERR_KEEP", 4)
    frames = [(ERR, b"first\n")] + [(OUT, b"123456")] * 3 + [(ERR, b"last")]
    out, err, overflow = eng._collect(frames)
    assert (out, err, overflow) == (b"", b"last", True)
    assert eng._collect([(OUT, b"1234567890")]) == (b"1234567890", b"", False)
