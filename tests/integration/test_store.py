"""Format 2: snapshots as directories of a store volume, copied by the agent, incremental.

The agent's own listing (`scan`, run in a container of the agent image) is what
trees are compared with: it sees what the archive API cannot (nanosecond
times, xattrs, sparseness, devices, sockets, names that are not UTF-8).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.integration.dockertools import (
    F2,
    FIDELITY_SCRIPT,
    Docker,
    agent_held_mid_copy,
    hold_env,
    records,
    snapshot_record,
    start_voltool,
    voltool,
    wait_for,
)

pytestmark = pytest.mark.engine

# On top of the tricky tree of format 1's tests: everything the archive API loses.
FORMAT_2_EXTRAS = r"""
set -e
cd /v
mkdir -p d/sub a
echo one > f; printf '' > empty; : > old; : > future
python3 - <<'PY'
import os
os.setxattr("f", "user.note", b"hello")
os.setxattr("d", "user.dir", b"x")
# A POSIX ACL: user::rw- user:1000:r-- group::r-- mask::rw- other::r--
acl = "0200000001000600ffffffff02000400e803000004000400ffffffff10000600ffffffff20000400ffffffff"
os.setxattr("f", "system.posix_acl_access", bytes.fromhex(acl))
os.utime("f", ns=(1700000000123456789, 1700000000123456789))  # nanoseconds
os.utime("old", ns=(-86400 * 10**9 + 5, -86400 * 10**9 + 5))  # before 1970
os.utime("future", ns=(10485849600 * 10**9 + 7,) * 2)  # the year 2302, after 2262
PY
dd if=/dev/zero of=sparse bs=1 count=0 seek=104857600 2>/dev/null
printf x | dd of=sparse bs=1 seek=52428800 conv=notrunc 2>/dev/null
mkfifo fifo; mknod null c 1 3
python3 -c 'import socket; s = socket.socket(socket.AF_UNIX); s.bind("sock")'
ln -s ../.. a/up
printf q > "$(printf 'name-\377')"
printf s > suid; chmod 4755 suid; ln suid suid-link; ln f f2; ln f f3
chown 33:33 d/sub; chmod 1777 d
"""

_IGNORED = {"ino", "dev", "ctime_ns", "atime_ns", "nlink"}


def fidelity_volume(dk: Docker, agent: str, volume: Callable[..., str]) -> str:
    """A volume with the tricky tree, and what only format 2 keeps (written by Python)."""
    vol = volume(FIDELITY_SCRIPT)
    dk.client.containers.run(
        agent,
        ["-c", FORMAT_2_EXTRAS],
        entrypoint=["/bin/sh"],
        volumes={vol: {"bind": "/v", "mode": "rw"}},
        network_mode="none",
        remove=True,
    )
    return vol


def scan(dk: Docker, image: str, volume: str, sub: str = "") -> list[dict[str, Any]]:
    """The agent's manifest of `volume` (or of `sub` inside it), times and inodes left out
    where a copy cannot keep them."""
    out = dk.client.containers.run(
        image,
        ["-c", 'python3 -I -m voltool_agent scan "$1"', "sh", f"/v/{sub}" if sub else "/v"],
        entrypoint=["/bin/sh"],
        volumes={volume: {"bind": "/v", "mode": "ro"}},
        network_mode="none",
        remove=True,
        stdout=True,
        stderr=False,
    )
    return [_comparable(json.loads(line)) for line in out.splitlines()]


def _comparable(entry: dict[str, Any]) -> dict[str, Any]:
    """What a copy must keep of an entry. Of its allocated size, whether it has holes: a
    filesystem may allocate a block more or less for the same bytes (delayed allocation,
    preallocation), but a sparse file copied whole would have none."""
    kept = {k: v for k, v in entry.items() if k not in _IGNORED and k != "alloc"}
    if "alloc" in entry:
        kept["holes"] = entry["alloc"] < entry.get("size", 0)
    return kept


def inodes(dk: Docker, store: str) -> dict[str, int]:
    """`<id>/<path>` -> inode of every regular file of every snapshot of `store`."""
    out = dk.run(
        {store: "/s"},
        'cd /s/snapshots && find . -path "*/data/*" -type f -exec stat -c "%i %n" {} +',
    )
    found = {}
    for line in out.splitlines():
        ino, name = line.split(" ", 1)
        sid, _, path = name.removeprefix("./").partition("/data/")
        found[f"{sid}/{path}"] = int(ino)
    return found


def snap(vol: str, *more: str) -> dict[str, Any]:
    return snapshot_record(vol, *more, env=F2)


def test_a_stored_snapshot_keeps_everything_the_archive_api_loses(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = fidelity_volume(dk, agent, volume)
    source = scan(dk, agent, vol)
    types = {e["type"] for e in source}
    assert types >= {"file", "dir", "symlink", "fifo", "char", "socket"}, types
    made = snap(vol)
    assert made["volume"] == f"voltool-store-{vol}" and made["state"] == "complete"
    stored = scan(dk, agent, made["volume"], f"snapshots/{made['id']}/data")
    assert stored == source  # every field the agent records, names, xattrs, ns times
    sparse = next(e for e in stored if e["path"] == "sparse")
    assert sparse["size"] == 104857600 and sparse["holes"]
    assert voltool("verify", made["id"]).code == 0


def test_an_incremental_snapshot_shares_what_did_not_change(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("cd /v && for i in $(seq 100); do echo $i > f$i; done && echo same > keep")
    time.sleep(1.1)  # older than a second: not "racily clean" for the first copy
    first = snap(vol)
    dk.run({vol: "/v"}, "echo changed > /v/f1; echo new > /v/g; rm /v/f2")
    # Same size and mtime as before: only the ctime tells.
    dk.run({vol: "/v"}, 'm=$(stat -c %Y /v/f3); echo 9 > /v/f3; touch -d "@$m" /v/f3')
    second = snap(vol)
    store = second["volume"]
    ino = inodes(dk, store)
    a, b = first["id"], second["id"]
    for i in range(4, 101):
        assert ino[f"{a}/f{i}"] == ino[f"{b}/f{i}"], f"f{i} was copied, not linked"
    assert ino[f"{a}/f1"] != ino[f"{b}/f1"]
    assert ino[f"{a}/f3"] != ino[f"{b}/f3"]  # the change that kept size and mtime
    assert f"{b}/f2" not in ino and f"{b}/g" in ino
    assert scan(dk, agent, store, f"snapshots/{b}/data") == scan(dk, agent, vol)
    assert dk.read(vol, "f3") == b"9\n"
    # Deleting the first leaves the second whole.
    assert voltool("delete", "--yes", a).code == 0
    assert voltool("verify", b).code == 0
    listed = [s["id"] for s in records(voltool("list", "--json", vol).out)]
    assert listed == [b]


def test_a_changed_hard_link_group_is_not_merged(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("cd /v && echo same > a && ln a b")
    time.sleep(1.1)
    snap(vol)
    dk.run({vol: "/v"}, "cd /v && rm b && echo same > b")  # two files, equal content
    time.sleep(1.1)
    second = snap(vol)
    ino = inodes(dk, second["volume"])
    assert ino[f"{second['id']}/a"] != ino[f"{second['id']}/b"]
    assert scan(dk, agent, second["volume"], f"snapshots/{second['id']}/data") == scan(
        dk, agent, vol
    )


def test_docker_volume_prune_leaves_stores_alone(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("echo x > /v/x")
    made = snap(vol)
    # Every unused volume that names this source: the store among them, nothing of others'.
    dk.client.volumes.prune(filters={"label": f"io.voltool.snapshot.source={vol}"})
    assert dk.client.volumes.get(made["volume"])
    (kept,) = records(voltool("list", "--json", vol).out)
    assert kept["id"] == made["id"] and kept["state"] == "complete"
    # The store and its keeper go with its last snapshot.
    assert voltool("delete", "--yes", made["id"]).code == 0
    with pytest.raises(docker.errors.NotFound):
        dk.client.volumes.get(made["volume"])
    keepers = dk.client.containers.list(
        all=True, filters={"label": f"io.voltool.keeper.volume={made['volume']}"}
    )
    assert keepers == []


def test_what_a_cut_delete_left_goes_with_the_next_delete(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("echo x > /v/x")
    first, second = snap(vol), snap(vol)
    # A delete killed between its rename and its removal leaves a directory never listed.
    dk.run(
        {first["volume"]: "/s"},
        f"cd /s/snapshots && mkdir .gone-{'0' * 16} && echo x > .gone-{'0' * 16}/f",
    )
    assert [r["id"] for r in records(voltool("list", "--json", vol).out)] == [
        first["id"],
        second["id"],
    ]
    assert voltool("delete", "--yes", first["id"]).code == 0
    assert dk.run({second["volume"]: "/s"}, "ls -A /s/snapshots").split() == [second["id"]]
    assert voltool("delete", "--yes", second["id"]).code == 0
    with pytest.raises(docker.errors.NotFound):  # the store went with its last snapshot
        dk.client.volumes.get(second["volume"])


def _recovered(dk: Docker, vol: str) -> None:
    r = voltool("recover", vol)
    assert r.code == 0, r.err
    assert records(voltool("list", "--json", vol).out) == []
    assert dk.managed_containers() == []
    assert voltool("recover", vol).out.strip() == "nothing to recover"


def test_a_snapshot_killed_before_its_commit_is_never_usable(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    vol = volume("echo x > /v/x")
    hold = tmp_path / "hold"
    proc = start_voltool("snapshot", vol, env={**F2, **hold_env("copied", hold)})
    wait_for(hold.exists, 120, "the copy to end")
    (listed,) = records(voltool("list", "--json", vol).out)
    assert listed["state"] == "incomplete"  # data and manifest there, no snapshot.json
    assert voltool("verify", listed["id"]).code != 0
    proc.kill()
    proc.wait(30)
    _recovered(dk, vol)


def test_a_snapshot_killed_mid_copy_is_never_usable(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("echo one > /v/a && echo two > /v/b")
    proc, _ = agent_held_mid_copy(dk, agent, vol, "snapshot", vol, env=F2)
    proc.kill()
    proc.wait(30)
    assert all(s["state"] != "complete" for s in records(voltool("list", "--json", vol).out))
    _recovered(dk, vol)


def test_a_killed_agent_fails_the_snapshot_cleanly(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("echo one > /v/a && echo two > /v/b")
    proc, helper = agent_held_mid_copy(dk, agent, vol, "snapshot", vol, env=F2)
    helper.kill()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert records(voltool("list", "--json", vol).out) == []
    assert voltool("recover", vol).out.strip() == "nothing to recover"
    assert dk.managed_containers() == []


# -- restoring stored snapshots ----------------------------------------------


def _same_tree(
    got: list[dict[str, Any]], want: list[dict[str, Any]], rolled_back: bool = False
) -> None:
    """Equal, exactly. `rolled_back`: but for the volume root's mtime below the second: the
    removal of the staging directory puts the old one back with a busybox `touch`, which
    takes whole seconds (a restore carried through gives the root its nanoseconds)."""

    def whole(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [
            {**e, "mtime_ns": e["mtime_ns"] // 10**9} if e["path"] == "." else e for e in entries
        ]

    if rolled_back:
        got, want = whole(got), whole(want)
    assert got == want


def test_a_stored_snapshot_restores_everything_into_a_new_volume(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = fidelity_volume(dk, agent, volume)
    made = snap(vol)
    copy = f"{vol}-copy"
    dk.also.append(copy)
    refused = voltool("restore", made["id"], "--to", copy, "--create", "--yes")
    assert refused.code == 6 and "--allow-special" in refused.err  # a FIFO and a device
    r = voltool("restore", made["id"], "--to", copy, "--create", "--yes", "--allow-special")
    assert r.code == 0, r.err
    _same_tree(scan(dk, agent, copy), scan(dk, agent, vol))


def test_restoring_in_place_keeps_the_old_data_in_the_store_incrementally(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    # Below the top: the swap renames top-level entries, which changes their ctime.
    vol = volume("mkdir /v/s && cd /v/s && for i in $(seq 50); do echo $i > f$i; done")
    time.sleep(1.1)
    made = snap(vol)
    before = scan(dk, agent, vol)
    dk.run({vol: "/v"}, "cd /v/s && echo changed > f1 && rm f2 && echo new > g")
    changed = scan(dk, agent, vol)
    plan = voltool("restore", made["id"], "--dry-run", "--json")
    assert plan.code == 0, plan.err
    assert records(plan.out)[0]["changes"] == {"added": 1, "changed": 1, "removed": 1}
    r = voltool("restore", made["id"], "--yes", "--json")
    assert r.code == 0, r.err
    (result,) = records(r.out)
    _same_tree(scan(dk, agent, vol), before)
    pre = result["pre_restore_snapshot"]
    listed = {s["id"]: s for s in records(voltool("list", "--json", vol).out)}
    assert listed[pre]["kind"] == "pre-restore" and listed[pre]["volume"] == made["volume"]
    store = made["volume"]
    assert _root_aside(scan(dk, agent, store, f"snapshots/{pre}/data"), changed)
    ino = inodes(dk, store)
    # Unchanged files of the old data are links to the snapshot's, not copies.
    assert ino[f"{pre}/s/f10"] == ino[f"{made['id']}/s/f10"]
    assert ino[f"{pre}/s/f1"] != ino[f"{made['id']}/s/f1"]
    assert voltool("verify", pre).code == 0


def _root_aside(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> bool:
    """Equal but for the root, whose entry the old-data directory stands in for."""
    return [e for e in got if e["path"] != "."] == [e for e in want if e["path"] != "."]


def test_a_tampered_store_is_refused_and_the_volume_left_alone(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("echo one > /v/a; echo two > /v/b")
    made = snap(vol)
    dk.run({vol: "/v"}, "echo changed > /v/a")
    before = scan(dk, agent, vol)
    dk.run(
        {made["volume"]: "/s"},
        f"cd /s/snapshots/{made['id']}/data && rm b && echo evil > b",
    )
    r = voltool("restore", made["id"], "--yes")
    assert r.code == 6 and "does not match" in r.err, r.err
    _same_tree(scan(dk, agent, vol), before, rolled_back=True)
    assert dk.managed_containers() == []


@pytest.mark.parametrize(("step", "forward"), [("staged", False), ("swap", True), ("save", True)])
def test_a_killed_restore_of_a_stored_snapshot_is_recovered(
    dk: Docker,
    agent: str,
    volume: Callable[..., str],
    container: Callable[..., str],
    tmp_path: Path,
    step: str,
    forward: bool,
) -> None:
    vol = volume("cd /v && echo one > a && mkdir d && echo two > d/b")
    made = snap(vol)
    want = scan(dk, agent, vol)
    dk.run({vol: "/v"}, "cd /v && echo changed > a && rm -r d && echo new > n")
    current = scan(dk, agent, vol)
    app = container([vol], "trap 'exit 0' TERM; while :; do sleep 0.1; done")
    hold = tmp_path / "hold"
    proc = start_voltool("restore", "--yes", made["id"], env={**F2, **hold_env(step, hold)})
    wait_for(hold.exists, 120, f"the restore to reach {step}")
    proc.kill()
    proc.wait(30)
    r = voltool("recover", vol, env={"VOLTOOL_STATE_DIR": str(tmp_path / "elsewhere")})
    assert r.code == 0, r.err
    got = scan(dk, agent, vol)
    if forward:
        _same_tree(got, want)
        pre = [s for s in records(voltool("list", "--json", vol).out) if s["kind"] == "pre-restore"]
        assert [s["state"] for s in pre] == ["complete"]
        assert _root_aside(
            scan(dk, agent, made["volume"], f"snapshots/{pre[0]['id']}/data"), current
        )
    else:
        _same_tree(got, current, rolled_back=True)
    assert dk.status(app) == "running"
    assert dk.managed_containers() == []
    assert voltool("recover", vol).out.strip() == "nothing to recover"


@pytest.mark.parametrize("killed", ["voltool", "agent"])
def test_a_restore_killed_while_its_agent_stages_leaves_the_volume_as_it_was(
    dk: Docker, agent: str, volume: Callable[..., str], killed: str
) -> None:
    vol = volume("cd /v && echo one > a && echo two > b")
    time.sleep(1.1)  # not racily clean: the pre-restore snapshot links both files
    made = snap(vol)
    dk.run({vol: "/v"}, "rm /v/b")  # changed, but nothing for the pre-restore copy to copy
    current = scan(dk, agent, vol)
    proc, helper = agent_held_mid_copy(dk, agent, vol, "restore", "--yes", made["id"], env=F2)
    if killed == "voltool":
        proc.kill()
        proc.wait(30)
        r = voltool("recover", vol)
        assert r.code == 0, r.err
    else:
        helper.kill()
        _, err = proc.communicate(timeout=120)
        assert proc.returncode != 0 and "Traceback" not in err, err
    _same_tree(scan(dk, agent, vol), current, rolled_back=True)
    assert dk.managed_containers() == []
    assert voltool("recover", vol).out.strip() == "nothing to recover"


def test_a_staged_tree_changed_before_the_swap_is_not_swapped_in(
    dk: Docker, agent: str, volume: Callable[..., str], tmp_path: Path
) -> None:
    # A container that uses the volume runs while the snapshot is staged: a clean-up
    # job deleting old files reaches into the staging directory too.
    vol = volume("cd /v && echo one > a && mkdir d && echo two > d/b")
    made = snap(vol)
    dk.run({vol: "/v"}, "echo changed > /v/a")
    current = scan(dk, agent, vol)
    hold = tmp_path / "hold"
    proc = start_voltool("restore", "--yes", made["id"], env={**F2, **hold_env("staged", hold)})
    wait_for(hold.exists, 120, "the restore to stage")
    dk.run({vol: "/v"}, "rm /v/.voltool-stage-*/d/b")
    hold.unlink()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 6 and "changed after it was checked" in err, err
    _same_tree(scan(dk, agent, vol), current, rolled_back=True)
    assert voltool("recover", vol).out.strip() == "nothing to recover"
    assert dk.managed_containers() == []


def test_ls_cat_and_diff_read_a_stored_snapshot(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("cd /v && echo hello > a && mkdir -p d/e && echo b > d/b && echo c > d/e/c")
    sid = snap(vol)["id"]
    top = voltool("ls", sid)
    assert top.code == 0, top.err
    assert [line.split()[-1] for line in top.out.splitlines()] == ["/a", "/d"]
    below = voltool("ls", sid, "d")
    assert [line.split()[-1] for line in below.out.splitlines()] == ["/d/b", "/d/e"]
    assert voltool("cat", sid, "d/e/c").out == "c\n"
    missing = voltool("cat", sid, "nope")
    assert missing.code == 3 and "no 'nope'" in missing.err
    dk.run({vol: "/v"}, "cd /v && echo x >> a && rm d/b && echo n > n")
    d = voltool("diff", sid, "--exit-code")
    assert d.code == 1, d.err
    assert sorted(d.out.splitlines()) == ["+ n", "- d/b", "~ a  (size, sha256)"]


def test_du_shows_what_each_snapshot_alone_holds(
    dk: Docker, agent: str, volume: Callable[..., str]
) -> None:
    vol = volume("head -c 1000000 /dev/urandom > /v/big")
    time.sleep(1.1)
    first = snap(vol)
    # And 3 GiB that take no room (sparse): sizes beyond 32 bits are summed right.
    sparse = "dd if=/dev/zero of=/v/sparse bs=1 count=0 seek=3221225472 2>/dev/null"
    dk.run({vol: "/v"}, f"head -c 300000 /dev/urandom > /v/more && {sparse}")
    second = snap(vol)
    r = voltool("du", vol, "--json")
    assert r.code == 0, r.err
    rows = records(r.out)
    alone = {x["id"]: x["alone_bytes"] for x in rows if "id" in x}
    # big is shared by both
    assert alone == {first["id"]: 0, second["id"]: 300000 + 3221225472}
    (total,) = [x["total_bytes"] for x in rows if "total_bytes" in x]
    assert 1300000 <= total < 1300000 + 1000000  # big is counted once
