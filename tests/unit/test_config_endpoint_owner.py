from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from voltool import config
from voltool.engine import endpoint
from voltool.errors import IntegrityError, NotFound, UsageError
from voltool.ids import check_volume_name, new_id, snapshot_volume_name
from voltool.owner import Owner, current
from voltool.store.layout import Meta, SnapshotInfo


def test_config_precedence_and_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('helper_image = "from-file"\ntimeout = 30\nstop_timeout = 3\n')
    monkeypatch.setenv("VOLTOOL_CONFIG", str(cfg))
    got = config.load({"stop_timeout": 9}, {"VOLTOOL_TIMEOUT": "45"})
    assert (got.helper_image, got.timeout, got.stop_timeout, got.busybox) == (
        "from-file",
        45,
        9,
        "/bin/busybox",
    )
    assert got.sources["helper_image"] == str(cfg)
    assert got.sources["timeout"] == "VOLTOOL_TIMEOUT"
    assert got.sources["stop_timeout"] == "command line"
    assert got.sources["busybox"] == "default"


@pytest.mark.parametrize("text", ["timeout = 'soon'\n", "bogus = 1\n", "not toml ==="])
def test_bad_config_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    monkeypatch.setenv("VOLTOOL_CONFIG", str(cfg))
    with pytest.raises(UsageError):
        config.load({}, {})


def test_new_snapshots_take_format_2_unless_told_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOLTOOL_CONFIG", str(tmp_path / "none.toml"))
    got = config.load({}, {})
    assert (got.format, got.sources["format"]) == (2, "default")
    assert config.load({}, {"VOLTOOL_FORMAT": "1"}).format == 1
    cfg = tmp_path / "c.toml"
    cfg.write_text("format = 1\n")
    monkeypatch.setenv("VOLTOOL_CONFIG", str(cfg))
    assert (config.load({}, {}).format, config.load({}, {}).sources["format"]) == (1, str(cfg))
    cfg.write_text("format = 3\n")
    with pytest.raises(UsageError, match=f"format from {cfg} must be 2 or 1, not 3"):
        config.load({}, {})
    loaded, problems = config.load_checked({}, {})
    assert loaded.format == 2 and len(problems) == 1


def _make_context(home: Path, name: str, host: str) -> None:
    meta = home / "contexts" / "meta" / hashlib.sha256(name.encode()).hexdigest()
    meta.mkdir(parents=True)
    (meta / "meta.json").write_text(
        json.dumps(
            {
                "Name": name,
                "Metadata": {},
                "Endpoints": {"docker": {"Host": host, "SkipTLSVerify": False}},
            }
        )
    )


def test_endpoint_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _make_context(tmp_path, "remote", "tcp://10.9.8.7:2375")
    _make_context(tmp_path, "other", "unix:///other.sock")
    (tmp_path / "config.json").write_text(json.dumps({"currentContext": "remote"}))
    assert endpoint.resolve(None, None, {}).host == "tcp://10.9.8.7:2375"
    assert endpoint.resolve(None, None, {"DOCKER_CONTEXT": "other"}).host == "unix:///other.sock"
    assert (
        endpoint.resolve(None, None, {"DOCKER_HOST": "tcp://1.2.3.4:2375"}).source == "DOCKER_HOST"
    )
    assert (
        endpoint.resolve(None, "other", {"DOCKER_HOST": "tcp://1.2.3.4:2375"}).host
        == "unix:///other.sock"
    )
    assert endpoint.resolve("unix:///x.sock", None, {}).host == "unix:///x.sock"
    with pytest.raises(UsageError):
        endpoint.resolve("unix:///x", "other", {})
    with pytest.raises((NotFound, UsageError)):
        endpoint.resolve(None, "missing", {})


def test_default_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    assert endpoint.resolve(None, None, {}).host == endpoint.DEFAULT_HOST


def test_owner_liveness() -> None:
    me = current()
    assert me.is_alive()
    assert Owner.parse(me.token()) == me
    assert not Owner(me.host, me.boot_id, me.pid, "12345", me.uid).is_alive()  # pid reused
    assert not Owner(me.host, "otherboot", me.pid, me.start, me.uid).is_alive()  # rebooted
    assert Owner("elsewhere", "b", 1, "1", 0).is_alive()  # cannot tell: presumed alive
    assert Owner.parse("garbage") is None
    assert os.getpid() == me.pid


def test_ids_and_names() -> None:
    sid = new_id()
    assert snapshot_volume_name(sid) == f"voltool-snap-{sid}"
    with pytest.raises(ValueError):
        snapshot_volume_name("../etc")
    with pytest.raises(UsageError):
        check_volume_name("bad/name")


def test_snapshot_info_and_meta_parse_strictly() -> None:
    info = SnapshotInfo(
        1, "0123456789abcdef", "v", "2026-01-01T00:00:00+00:00", "manual", 3, 10, "a" * 64
    )
    assert SnapshotInfo.parse(info.to_json(), "0123456789abcdef") == info
    with pytest.raises(Exception, match="does not match"):
        SnapshotInfo.parse(info.to_json(), "fedcba9876543210")
    bad = json.loads(info.to_json())
    bad["format"] = 3
    with pytest.raises(Exception, match="unknown format"):
        SnapshotInfo.parse(json.dumps(bad).encode())
    bad["format"], bad["id"] = 1, "../../x"
    with pytest.raises(Exception, match="invalid snapshot id"):
        SnapshotInfo.parse(json.dumps(bad).encode())
    meta = Meta("nightly", "before upgrade", True)
    assert Meta.parse(meta.to_json()) == meta
    assert meta.etag == hashlib.sha256(meta.canonical()).hexdigest() != Meta().etag
    with pytest.raises(Exception, match="invalid name"):
        Meta.parse(b'{"name": "../x"}')


@pytest.mark.parametrize("host", ["tcp://:::bad", "bogus://x", "tcp://h:99999", "tcp://", "h:2375"])
def test_a_malformed_engine_address_is_a_usage_error(host: str) -> None:
    with pytest.raises(UsageError, match=r"invalid engine address .*from --host"):
        endpoint.resolve(host, None, {})
    with pytest.raises(UsageError, match="from DOCKER_HOST"):
        endpoint.resolve(None, None, {"DOCKER_HOST": host})


def test_a_bad_name_given_by_the_user_is_a_usage_error_not_damage() -> None:
    with pytest.raises(UsageError, match="invalid name 'bad name'"):
        Meta("bad name").check_input()
    with pytest.raises(IntegrityError, match=r"meta\.json: invalid name"):
        Meta("bad name").check()
    Meta("pre-upgrade", "a note").check_input()
