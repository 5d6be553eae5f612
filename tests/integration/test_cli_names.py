"""Names, filters, browsing and scripting habits: exact exit codes and output."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.dockertools import Docker, in_snapshot, records, voltool
from tests.integration.test_cli import make_snapshot, one_line_error

pytestmark = pytest.mark.engine


def unique_name() -> str:
    return f"n-{uuid.uuid4().hex[:10]}"  # names are per volume, but keep them apart from others'


def test_a_name_resolves_within_the_volume_of_the_command(volume: Callable[..., str]) -> None:
    data, files = volume("echo a > /v/a"), volume("echo f > /v/f")
    name = unique_name()
    r = voltool("snapshot", "--json", data, files, "--name", name)
    assert r.code == 0, r.err
    by_source = {s["source"]: s["id"] for s in records(r.out)}
    r = voltool("inspect", "--name", name)
    one_line_error(r, 2, f"snapshot name '{name}' is ambiguous")
    assert f"(volume {data}," in r.err and f"(volume {files}," in r.err
    r = voltool("inspect", "--name", name, "--volume", files, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["id"] == by_source[files]
    r = voltool("restore", "--name", name, "--to", files, "--dry-run", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["snapshot"] == by_source[files]
    r = voltool("diff", "--name", name, data, "--exit-code")
    assert (r.code, r.out) == (0, ""), r.err
    one_line_error(
        voltool("inspect", "--name", name, "--volume", volume()), 3, f"no snapshot named '{name}'"
    )


def test_an_unknown_volume_suggests_the_closest(volume: Callable[..., str]) -> None:
    vol = volume()
    one_line_error(
        voltool("snapshot", vol[:-1]), 3, f"no volume named '{vol[:-1]}'; did you mean '{vol}'?"
    )
    one_line_error(voltool("digest", vol + "x"), 3, f"did you mean '{vol}'?")


def test_list_filters_quiet_and_json_lines(volume: Callable[..., str]) -> None:
    vol = volume("echo a > /v/a")
    name = unique_name()
    first = make_snapshot(vol, "--name", name)
    second = make_snapshot(vol)
    r = voltool("list", "-q", "--volume", vol)
    assert (r.code, r.out) == (0, f"{first['id']}\n{second['id']}\n"), r.err
    r = voltool("ls", "-q", "--volume", vol, "--name", name)
    assert (r.code, r.out) == (0, f"{first['id']}\n"), r.err
    lines = voltool("list", "--volume", vol, "--format", "json").out.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [first["id"], second["id"]]
    assert voltool("list", vol, "--json", "--since", "1h").out.splitlines() == lines
    assert voltool("list", "-q", vol, "--before", "1h").out == ""
    assert voltool("list", "-q", vol, "--since", "2000-01-01").out.count("\n") == 2
    assert voltool("list", "-q", vol, "--kind", "import").out == ""
    one_line_error(voltool("list", "--since", "yesterday"), 2, "--since: 'yesterday' is neither")
    one_line_error(voltool("list", "--format", "yaml"), 2, "--format must be table or json")


def test_ls_and_cat(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume("mkdir -p /v/d/e && printf hello > /v/d/f && echo x > /v/d/e/g && ln -s f /v/d/l")
    made = make_snapshot(vol)
    sid = str(made["id"])
    r = voltool("ls", sid)
    assert r.code == 0, r.err
    assert [line.split()[0] + " " + line.split()[-1] for line in r.out.splitlines()] == [
        "drwxr-xr-x /d"
    ]
    r = voltool("ls", sid, "d")
    assert [line.split(None, 6)[-1] for line in r.out.splitlines()] == [
        "/d/e",
        "/d/f",
        "/d/l -> f",
    ]
    assert r.out.splitlines()[1].split()[:4] == ["-rw-r--r--", "0", "0", "5"]
    r = voltool("ls", sid, "/d/", "-R", "--json")
    assert [json.loads(line)["path"] for line in r.out.splitlines()] == [
        "d/e",
        "d/e/g",
        "d/f",
        "d/l",
    ]
    one_line_error(voltool("ls", sid, "nope"), 3, f"no 'nope' in snapshot {sid}")
    r = voltool("cat", sid, "d/f")
    assert (r.code, r.out, r.err) == (0, "hello", "")
    one_line_error(voltool("cat", sid, "d"), 2, "'d' in snapshot")
    one_line_error(voltool("cat", sid, "d/l"), 2, "is a symlink, not a regular file")
    one_line_error(voltool("cat", sid, "d/nope"), 3, f"no 'd/nope' in snapshot {sid}")
    # The same size, other bytes: only the hash can tell.
    dk.run({str(made["volume"]): "/s"}, 'printf HELLO > "/s/$1"', in_snapshot(made, "data/d/f"))
    one_line_error(voltool("cat", sid, "d/f"), 6, "does not match the snapshot's manifest")


def test_diff_exit_code(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume("echo a > /v/a")
    sid = str(make_snapshot(vol)["id"])
    assert voltool("diff", sid, "--exit-code").code == 0
    dk.run({vol: "/v"}, "echo b > /v/b")
    r = voltool("diff", sid, "--exit-code")
    assert (r.code, r.out) == (1, "+ b\n"), r.err
    assert voltool("diff", sid).code == 0


def test_prune_keeps_named_snapshots_unless_included(volume: Callable[..., str]) -> None:
    vol = volume("echo a > /v/a")
    name = unique_name()
    named = make_snapshot(vol, "--name", name)
    plain = make_snapshot(vol)
    newest = make_snapshot(vol)
    r = voltool("prune", vol, "--keep-last", "1", "--dry-run")
    assert r.code == 0, r.err
    rows = {line.split()[0]: line for line in r.out.splitlines()[1:4]}
    assert rows[str(named["id"])[:12]].split()[-4:] == ["manual", name, "keep", "named"]
    assert rows[str(plain["id"])[:12]].split()[-2:] == ["manual", "remove"]
    assert rows[str(newest["id"])[:12]].split()[-4:] == ["manual", "keep", "last", "1"]
    r = voltool("prune", vol, "--keep-last", "1", "--dry-run", "--include-named", "--json")
    plan = {p["id"]: p for p in records(r.out)}
    assert plan[named["id"]]["action"] == "remove" and plan[named["id"]]["name"] == name
    assert "named snapshots: kept" in voltool("config", "show").out


def test_delete_by_name_and_rm(volume: Callable[..., str]) -> None:
    vol = volume()
    name = unique_name()
    named = make_snapshot(vol, "--name", name)
    other = make_snapshot(vol)
    r = voltool("delete", "--name", name, "--volume", vol, "--yes", "--json")
    assert r.code == 0, r.err
    (deleted,) = records(r.out)
    assert (deleted["id"], deleted["deleted"]) == (named["id"], True)
    r = voltool("rm", str(other["id"]), "--yes")
    assert (r.code, r.out) == (0, f"deleted {other['id']}\n"), r.err
    assert voltool("list", "-q", vol).out == ""


def test_cron_recipe_writes_json_lines(volume: Callable[..., str], tmp_path: Path) -> None:
    a, b = volume("echo a > /v/a"), volume("echo b > /v/b")
    log = tmp_path / "voltool.jsonl"
    with log.open("a") as f:
        for _ in range(2):
            r = voltool("snapshot", a, b, "--json")
            assert r.code == 0, r.err
            f.write(r.out)
        r = voltool("prune", a, b, "--keep-last", "1", "--yes", "--json")
        assert r.code == 0, r.err
        f.write(r.out)
        kept = [p["id"] for p in records(r.out) if p["action"] == "keep"]
        r = voltool("verify", *kept, "--json")
        assert r.code == 0, r.err
        f.write(r.out)
    docs = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(docs) == 4 + 4 + 2
    # Each snapshot command writes its volumes' records in name order.
    first, second = sorted([a, b])
    assert [d["source"] for d in docs[:4]] == [first, second, first, second]
    assert sorted(d["action"] for d in docs[4:8]) == ["keep", "keep", "remove", "remove"]
    assert all(d["ok"] for d in docs[8:])
