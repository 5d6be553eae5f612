"""Format 2 against a store someone with access to the engine has altered.

A store's content is data to validate: it may restore no more than format 1
lets through, and it must never make voltool hang, crash or touch what it
should not.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest

from tests.integration.dockertools import F1, F2, Docker, records, voltool
from tests.integration.test_store import _same_tree, scan, snap

pytestmark = pytest.mark.engine


def _summary(dk: Docker, image: str, volume: str, path: str) -> dict[str, Any]:
    """The agent's scan summary (tree digest, entries) of `path` in `volume`."""
    err = dk.client.containers.run(
        image,
        ["-c", 'python3 -I -m voltool_agent scan "$1" > /dev/null', "sh", f"/v/{path}"],
        entrypoint=["/bin/sh"],
        volumes={volume: {"bind": "/v", "mode": "ro"}},
        network_mode="none",
        remove=True,
        stdout=False,
        stderr=True,
    )
    lines = [json.loads(line) for line in err.splitlines()]
    (summary,) = [line for line in lines if line.get("event") == "summary"]
    return summary  # type: ignore[no-any-return]


def _rewrite_info(dk: Docker, store: str, sid: str, **fields: Any) -> None:
    """Set fields of snapshot.json, as a tamperer would."""
    path = f"/s/snapshots/{sid}/snapshot.json"
    info = json.loads(dk.run({store: "/s"}, f"cat {path}"))
    info.update(fields)
    dk.run({store: "/s"}, f'printf "%s" "$1" > {path}', json.dumps(info))


def _kill_users(dk: Docker, *volumes: str) -> None:
    """Remove the containers (of this test) that still mount or lock `volumes`."""
    for v in volumes:
        for c in dk.client.containers.list(all=True, filters={"volume": v}):
            c.remove(force=True)
        for c in dk.client.containers.list(all=True, filters={"name": f"^voltool-lock-{v}$"}):
            c.remove(force=True)


def test_a_device_node_hidden_from_the_manifest_needs_allow_special(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("echo one > /v/a")
    made = snap(vol)
    store, sid = made["volume"], made["id"]
    # A device node in the stored data that the manifest does not list, and a
    # snapshot.json whose digest is the altered tree's: consistent but for the manifest.
    dk.run({store: "/s"}, f"mknod /s/snapshots/{sid}/data/mem c 1 1")
    tampered = _summary(dk, agent, store, f"snapshots/{sid}/data")
    _rewrite_info(dk, store, sid, tree_digest=tampered["digest"], entries=tampered["entries"])
    copy = f"{vol}-copy"
    dk.also.append(copy)
    r = voltool("restore", sid, "--to", copy, "--create", "--yes")
    assert r.code == 6 and "--allow-special" in r.err, (r.code, r.err)
    assert not any(e["type"] == "char" for e in scan(dk, agent, copy) if copy in _names(dk))


def _names(dk: Docker) -> set[str]:
    return {v.name for v in dk.client.volumes.list()}


@pytest.mark.parametrize("line", ['"type": "fifo"', '"type":"\\u0066ifo"'])
def test_a_fifo_the_grep_cannot_see_still_needs_allow_special(
    dk: Docker, agent: str, volume: Callable[..., str], line: str
) -> None:
    vol = volume("echo one > /v/a")
    made = snap(vol)
    store, sid = made["volume"], made["id"]
    dk.run({store: "/s"}, f"mkfifo /s/snapshots/{sid}/data/p")
    tampered = _summary(dk, agent, store, f"snapshots/{sid}/data")
    _rewrite_info(dk, store, sid, tree_digest=tampered["digest"], entries=tampered["entries"])
    r = voltool("restore", sid, "--to", f"{vol}-copy", "--create", "--dry-run")
    assert r.code == 6 and "--allow-special" in r.err, (r.code, r.err)


@pytest.mark.parametrize("command", ["snapshot", "diff", "verify"])
def test_a_fifo_for_a_stored_manifest_does_not_hang(
    dk: Docker, agent: str, volume: Callable[..., str], command: str
) -> None:
    vol = volume("echo one > /v/a")
    made = snap(vol)
    store, sid = made["volume"], made["id"]
    dk.run({store: "/s"}, f"cd /s/snapshots/{sid} && rm manifest.jsonl && mkfifo manifest.jsonl")
    args = {
        "snapshot": ["snapshot", vol],
        "diff": ["diff", sid, vol],
        "verify": ["verify", sid],
    }[command]
    try:
        r = voltool(*args, env=F2, timeout=90)
    except subprocess.TimeoutExpired:
        _kill_users(dk, store, vol)
        pytest.fail(f"voltool {command} hung on a FIFO in the store")
    if command == "snapshot":
        assert r.code == 0, r.err  # a full copy: the damaged snapshot is not linked from
        (newer,) = [s for s in records(voltool("list", "--json", vol).out) if s["id"] != sid]
        assert newer["state"] == "complete"
    else:
        assert r.code != 0 and "Traceback" not in r.err, r.err


def test_the_same_id_in_two_stores_lists_both(dk: Docker, volume: Callable[..., str]) -> None:
    a, b = volume("echo a > /v/f"), volume("echo b > /v/f")
    sa, sb = snap(a), snap(b)
    # Store b gets a snapshot under store a's snapshot's id, consistent for b.
    sid, other = sa["id"], sb["id"]
    dk.run(
        {sb["volume"]: "/s"},
        f"cd /s/snapshots && mv {other} {sid} && cd {sid} && "
        f"sed -i s/{other}/{sid}/ begun.json snapshot.json",
    )
    listed = records(voltool("list", "--json").out)
    mine = sorted((s["volume"], s["source"]) for s in listed if s["id"] == sid)
    assert mine == sorted([(sa["volume"], a), (sb["volume"], b)]), mine


def test_a_snapshot_whose_data_is_a_symlink_is_refused(
    dk: Docker, volume: Callable[..., str]
) -> None:
    vol = volume("echo one > /v/a")
    made = snap(vol)
    store, sid = made["volume"], made["id"]
    dk.run({store: "/s"}, f"cd /s/snapshots/{sid} && mv data d && ln -s / data")
    r = voltool("restore", sid, "--to", f"{vol}-copy", "--create", "--dry-run")
    assert r.code != 0 and "Traceback" not in r.err, r.err
    used = voltool("du", "--json")
    assert used.code == 0 and "Traceback" not in used.err, used.err
    assert voltool("delete", sid, "--yes").code == 0
    assert store not in _names(dk)  # its last snapshot: the store went with it


def test_a_volume_in_the_way_of_the_store_stops_a_restore_before_it_begins(
    dk: Docker, volume: Callable[..., str]
) -> None:
    vol = volume("echo one > /v/a")
    made = records(voltool("snapshot", "--json", vol, env=F1).out)[0]
    dk.run({vol: "/v"}, "echo changed > /v/a")
    squatter = f"voltool-store-{vol}"
    dk.client.volumes.create(squatter)  # a user's volume, not voltool's store
    dk.also.append(squatter)
    r = voltool("restore", "--yes", made["id"], env=F2)
    assert r.code == 5 and "in the way of the store" in r.err, r.err
    assert dk.read(vol, "a") == b"changed\n"
    assert voltool("recover", vol).out.strip() == "nothing to recover"
    assert dk.managed_containers() == []


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"mode": 0o5777, "uid": 4242}, "the root entry its manifest gives is not its data's"),
        ({"mode": 70000}, "its manifest has no root entry"),  # beyond 0o7777: never chmod'ed
    ],
)
def test_a_forged_root_line_is_refused_and_the_volume_left_alone(
    dk: Docker, agent: str, volume: Callable[..., str], fields: dict[str, int], why: str
) -> None:
    vol = volume("echo one > /v/a")
    made = snap(vol)
    store, sid = made["volume"], made["id"]
    dk.run({vol: "/v"}, "echo changed > /v/a")
    before = scan(dk, agent, vol)
    # Only the manifest's first line: the data, and so the tree digest, stay as they were.
    # (Stored gzip-compressed; written back plain, as older stores keep it, and readers take.)
    manifest = f"/s/snapshots/{sid}/manifest.jsonl"
    first = json.loads(dk.run({store: "/s"}, f"zcat {manifest} | head -n 1"))
    forged = json.dumps({**first, **fields}, sort_keys=True, separators=(",", ":"))
    dk.run(
        {store: "/s"},
        f"{{ printf '%s\\n' \"$1\"; zcat {manifest} | tail -n +2; }} > /tmp/m"
        f" && cat /tmp/m > {manifest}",
        forged,
    )
    r = voltool("restore", sid, "--yes")
    assert r.code == 6 and why in r.err, (r.code, r.err)
    _same_tree(scan(dk, agent, vol), before, rolled_back=True)
    assert voltool("recover", vol).out.strip() == "nothing to recover"
    assert dk.managed_containers() == []
