"""The commands as a user meets them: exact exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable

import pytest

from tests.integration.dockertools import (
    F1,
    Docker,
    Result,
    in_snapshot,
    records,
    start_voltool,
    voltool,
)

pytestmark = pytest.mark.engine


def one_line_error(r: Result, code: int, text: str) -> None:
    assert r.code == code, (r.code, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voltool: error: "), r.err
    assert text in lines[0], r.err
    assert "Traceback" not in r.err + r.out


def make_snapshot(vol: str, *extra: str) -> dict[str, object]:
    r = voltool("snapshot", "--json", vol, *extra)
    assert r.code == 0, r.err
    return records(r.out)[0]  # type: ignore[no-any-return]


def test_unknown_volume(volume: Callable[..., str]) -> None:
    one_line_error(
        voltool("snapshot", "vt-does-not-exist"), 3, "no volume named 'vt-does-not-exist'"
    )


def test_invalid_volume_name() -> None:
    one_line_error(voltool("snapshot", "../etc"), 2, "invalid volume name")


def test_a_snapshot_volume_is_not_a_source(volume: Callable[..., str]) -> None:
    rec = make_snapshot(volume("echo a > /v/a"))
    one_line_error(voltool("snapshot", str(rec["volume"])), 2, "is a voltool snapshot volume")


def test_unreachable_engine() -> None:
    r = voltool("list", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    one_line_error(r, 8, "cannot reach the Docker Engine at unix:///nonexistent.sock")


def test_option_errors_are_usage_errors() -> None:
    one_line_error(voltool("list", "--bogus"), 2, "No such option: --bogus")
    one_line_error(voltool("snapshot", "--stop", "--no-quiesce", "x"), 2, "exclude each other")


def test_ambiguous_and_unknown_references(dk: Docker, volume: Callable[..., str]) -> None:
    src = volume()
    prefix = uuid.uuid4().hex[:8]  # volume names are global to the engine: unique to this run
    for sid in (f"{prefix}00000001", f"{prefix}00000002"):  # two ids with a common prefix
        dk.fake_snapshot_volume(sid, src)
    r = voltool("inspect", prefix)
    one_line_error(r, 2, f"'{prefix}' is ambiguous")
    assert r.err.count(f"{prefix}0000000") == 2
    one_line_error(voltool("inspect", "ffff0000"), 3, "no snapshot with id 'ffff0000'")
    one_line_error(voltool("inspect", "ab"), 2, "too short")
    one_line_error(voltool("inspect", "nightly"), 2, "not a snapshot id")
    one_line_error(voltool("inspect", "--name", "nope"), 3, "no snapshot named 'nope'")
    listed = records(voltool("list", "--json", src).out)
    assert {s["state"] for s in listed} == {"incomplete"}


def test_list_and_inspect(dk: Docker, volume: Callable[..., str]) -> None:
    a, b = volume("echo a > /v/a"), volume("echo bb > /v/b")
    first = make_snapshot(a, "--name", "first", "--note", "a note")
    time.sleep(1.1)
    second = make_snapshot(a)
    other = make_snapshot(b)
    everything = records(voltool("list", "--json").out)
    ids = [s["id"] for s in everything]
    assert {first["id"], second["id"], other["id"]} <= set(ids)
    assert ids.index(first["id"]) < ids.index(second["id"])  # oldest first
    only_a = records(voltool("list", "--json", a).out)
    assert [s["id"] for s in only_a] == [first["id"], second["id"]]
    assert only_a[0]["name"] == "first" and only_a[0]["entries"] == 2 and only_a[0]["bytes"] == 2
    table = voltool("list", a)
    assert table.code == 0
    assert str(first["id"])[:12] in table.out and "first" in table.out and "complete" in table.out

    by_prefix = json.loads(voltool("inspect", "--json", str(first["id"])[:6]).out)
    by_name = json.loads(voltool("inspect", "--json", "--name", "first").out)
    assert by_prefix == by_name
    assert by_prefix["note"] == "a note" and len(by_prefix["etag"]) == 64
    assert by_prefix["labels"]["io.voltool.snapshot.source"] == a
    assert by_prefix["tree_digest"] == first["tree_digest"]
    text = voltool("inspect", str(first["id"]))
    assert f"tree_digest:  {first['tree_digest']}" in text.out


def test_listing_many_snapshots_starts_one_container(
    dk: Docker, volume: Callable[..., str]
) -> None:
    vol = volume("echo a > /v/a")
    for _ in range(4):
        make_snapshot(vol)
    start_ns = time.time_ns()
    proc = start_voltool("list", vol)
    assert proc.wait(120) == 0
    events = dk.client.events(
        since=int(start_ns // 1e9),
        until=int(time.time()) + 1,
        filters={"type": "container", "event": "create", "label": "io.voltool.managed=true"},
        decode=True,
    )
    # Only this process's: other runs may share the engine. Its owner token holds its pid.
    ours = [
        e
        for e in events
        if e["timeNano"] >= start_ns
        and e["Actor"]["Attributes"].get("io.voltool.owner", "").split("/")[2:3] == [str(proc.pid)]
    ]
    assert len(ours) == 1


def listed_ids(vol: str) -> list[str]:
    return [s["id"] for s in records(voltool("list", "--json", vol).out)]


def test_delete(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume("echo a > /v/a")
    keep, gone = make_snapshot(vol), make_snapshot(vol)
    one_line_error(voltool("delete", str(gone["id"])), 11, "no terminal to confirm on; pass --yes")
    assert listed_ids(vol) == [keep["id"], gone["id"]]
    r = voltool("delete", "--yes", str(gone["id"]))
    assert r.code == 0 and f"deleted {gone['id']}" in r.out
    assert listed_ids(vol) == [keep["id"]]
    assert dk.snapshot_volumes(vol) == [keep["volume"]]
    # A pinned snapshot (meta.json edited in place) needs --force.
    dk.run(
        {str(keep["volume"]): "/s"},
        'printf \'{"name": null, "note": null, "pinned": true}\' > "/s/$1"',
        in_snapshot(keep, "meta.json"),
    )
    one_line_error(voltool("delete", "--yes", str(keep["id"])), 5, "is pinned")
    assert voltool("delete", "--yes", "--force", str(keep["id"])).code == 0
    assert dk.snapshot_volumes(vol) == []


def test_delete_waits_for_or_refuses_a_busy_snapshot(
    dk: Docker, volume: Callable[..., str]
) -> None:
    vol = volume("echo a > /v/a")
    snap = make_snapshot(vol)
    name = f"voltool-lock-{snap['volume']}"
    holder = dk.client.containers.create(
        dk.image,
        ["true"],
        labels={
            "io.voltool.managed": "true",
            "io.voltool.role": "lock",
            "io.voltool.op": "0000000000000000",
            "io.voltool.lock.kind": "restore",
            "io.voltool.lock.volume": str(snap["volume"]),
            "io.voltool.owner": "another-host/b/1/1/0",
        },
        name=name,
    )
    try:
        r = voltool("delete", "--yes", str(snap["id"]))
        one_line_error(
            r, 4, "is busy: restore operation 0000000000000000 by pid 1 (uid 0) on another-host"
        )
    finally:
        holder.remove(force=True)
    assert voltool("delete", "--yes", str(snap["id"])).code == 0


def test_doctor_reports_engine_image_and_state() -> None:
    r = voltool("doctor", "--json")
    assert r.code == 0, r.err
    checks = {c["name"]: c for c in records(r.out)}
    assert checks["engine"]["status"] == "ok" and "Docker Engine" in checks["engine"]["detail"]
    assert checks["endpoint"]["status"] == "ok"
    assert checks["helper image"]["status"] == "ok"
    assert checks["state directory"]["status"] == "ok"
    (fmt,) = [c for c in records(r.out) if c["name"] == "format" and "new snap" in c["detail"]]
    assert fmt["status"] == "ok"
    assert fmt["detail"].startswith("new snapshots take format 2: a store per volume")
    assert fmt["detail"].endswith("(from default)")
    chosen = records(voltool("doctor", "--json", env=F1).out)
    (fmt,) = [c for c in chosen if c["name"] == "format" and "new snap" in c["detail"]]
    assert fmt["detail"].startswith("new snapshots take format 1: a snapshot volume each")
    assert fmt["detail"].endswith("(from VOLTOOL_FORMAT)")
    down = voltool("doctor", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert down.code == 8 and "FAIL  engine" in down.out


def test_version_and_help() -> None:
    from voltool import __version__

    assert voltool("--version").out.strip() == f"voltool {__version__}"
    bare = voltool()
    assert bare.code == 2 and "snapshot" in bare.out


def test_a_bad_snapshot_name_is_a_usage_error(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume("echo a > /v/a")
    one_line_error(voltool("snapshot", vol, "--name", "bad name"), 2, "invalid name 'bad name'")
    assert dk.snapshot_volumes(vol) == []


@pytest.mark.parametrize("host", ["tcp://:::bad", "bogus://x", "tcp://host:99999"])
def test_a_malformed_engine_address_is_a_usage_error(host: str) -> None:
    one_line_error(voltool("--host", host, "list"), 2, f"invalid engine address {host!r}")
    one_line_error(voltool("list", env={"DOCKER_HOST": host}), 2, "(from DOCKER_HOST)")


def test_without_a_terminal_bad_arguments_come_before_the_refusal(
    dk: Docker, volume: Callable[..., str]
) -> None:
    src = volume()
    prefix = uuid.uuid4().hex[:8]
    for n in (1, 2):  # two ids with a common prefix: an ambiguous reference
        dk.fake_snapshot_volume(f"{prefix}0000000{n}", src)
    real = make_snapshot(volume("echo a > /v/a"))
    sid = str(real["id"])
    cases = [
        (["restore", prefix], "is ambiguous"),
        (["restore", "ZZZZ"], "not a snapshot id"),
        (["restore", "--name", "bad name"], "invalid name 'bad name'"),
        (["restore", sid, "--to", "bad/name"], "invalid volume name 'bad/name'"),
        (["restore", sid, "--if-match", "xyz"], "is not a tree digest"),
        (["delete", prefix], "is ambiguous"),
        (["delete", sid, "ZZZZ"], "not a snapshot id"),
        (["prune", "bad/name", "--keep-last", "1"], "invalid volume name 'bad/name'"),
        (["prune", "--kind", "bogus", "--keep-last", "1"], "--kind must be one of"),
        (["prune", "--keep-within", "6M"], "m (months)"),
    ]
    for args, text in cases:
        one_line_error(voltool(*args), 2, text)
    # Arguments that are right: the refusal, and nothing was deleted.
    one_line_error(voltool("restore", sid), 11, "pass --yes")
    one_line_error(voltool("delete", sid), 11, "pass --yes")
    assert voltool("inspect", sid).code == 0
