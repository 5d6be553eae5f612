"""Test-side engine access, independent of voltool's code: populate, list, inspect volumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

# One line per entry, with names and link targets hex-encoded so any byte survives.
LIST_SCRIPT = r"""
cd "$1" || exit 1
find . -print0 | xargs -0 -n 64 sh -c '
for f; do
  n=$(printf %s "$f" | od -An -v -tx1 | tr -d " \n")
  t=$(stat -c "%F|%a|%u|%g|%s|%Y|%i|%h" "$f")
  l=""; h=""
  if [ -L "$f" ]; then l=$(printf %s "$(readlink "$f")" | od -An -v -tx1 | tr -d " \n")
  elif [ -f "$f" ]; then h=$(sha256sum < "$f" | cut -d" " -f1); fi
  echo "$n|$t|$l|$h"
done' sh
"""

FIDELITY_SCRIPT = r"""
set -e
cd /v
mkdir -p dir/nested/deeper emptydir sticky zerodir
: > empty
echo small > small.txt
head -c 6291456 /dev/urandom > big.bin
printf s > suid; chmod 4755 suid
printf g > sgid; chmod 2711 sgid
chmod 1777 sticky
printf z > zero; chmod 0 zero
printf o > owned; chown 1000:1000 owned
printf deep > dir/nested/deeper/file
chown 65534:65534 dir/nested; chown 123:456 dir/nested/deeper
ln -s small.txt rel-link; ln -s /etc/passwd abs-link
ln -s does/not/exist dangling; ln -s ../.. dir/up-link
ln big.bin big-hardlink; ln suid suid-hardlink; ln dir/nested/deeper/file deep-hardlink
printf sp > "name with spaces"
printf nl > "$(printf 'new\nline')"
printf u > "ünïcödé-名前"
long=$(printf 'L%.0s' $(seq 1 150)); printf long > "$long"
p=$(printf 'p%.0s' $(seq 1 60)); q=$(printf 'q%.0s' $(seq 1 60))
mkdir -p "$p/$q"; printf x > "$p/$q/f"
touch -d "2001-02-03 04:05:06" small.txt big.bin owned
touch -d "1999-12-31 23:59:59" dir/nested/deeper dir/nested emptydir
chmod 0 zerodir
chmod 750 /v; chown 7:8 /v
"""

_TYPES = {
    "regular file": "file",
    "regular empty file": "file",
    "directory": "dir",
    "symbolic link": "symlink",
    "fifo": "fifo",
}


@dataclass(frozen=True)
class Listed:
    type: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    target: str | None
    sha256: str | None


@dataclass(frozen=True)
class Listing:
    entries: dict[str, Listed]
    links: frozenset[frozenset[str]]  # hard-link groups


class Docker:
    def __init__(self, client: docker.DockerClient, image: str) -> None:
        self.client = client
        self.image = image
        # The volumes the running test made (set by the `volume` fixture): what
        # `managed_containers` and the teardown look at, and nothing else.
        self.scope: list[str] = []
        self.also: list[str] = []  # volumes the test made otherwise (restore --create)
        self.made: list[str] = []  # every volume the `volume` fixture made in this run

    def run(self, mounts: dict[str, str], script: str, *args: str, check: bool = True) -> str:
        out = self.client.containers.run(
            self.image,
            ["-c", script, "sh", *args],
            entrypoint=["/bin/sh"],
            volumes={v: {"bind": p, "mode": "rw"} for v, p in mounts.items()},
            network_mode="none",
            remove=True,
            stdout=True,
            stderr=True,
        )
        return out.decode("utf-8", "surrogateescape")  # type: ignore[no-any-return]

    def listing(self, volume: str, sub: str = "") -> Listing:
        raw = self.run({volume: "/v"}, LIST_SCRIPT, f"/v/{sub}" if sub else "/v")
        entries: dict[str, Listed] = {}
        inodes: dict[str, set[str]] = {}
        for line in raw.splitlines():
            n, ftype, mode, uid, gid, size, mtime, ino, nlink, target, sha = line.split("|")
            path = bytes.fromhex(n).decode("utf-8", "surrogateescape")
            path = "." if path == "." else path.removeprefix("./")
            kind = _TYPES[ftype]
            entries[path] = Listed(
                kind,
                int(mode, 8),
                int(uid),
                int(gid),
                int(size) if kind == "file" else 0,
                int(mtime),
                bytes.fromhex(target).decode("utf-8", "surrogateescape")
                if kind == "symlink"
                else None,
                sha or None,
            )
            if kind == "file" and int(nlink) > 1:
                inodes.setdefault(ino, set()).add(path)
        return Listing(entries, frozenset(frozenset(g) for g in inodes.values()))

    def read(self, volume: str, path: str) -> bytes:
        return self.run({volume: "/v"}, 'cat "/v/$1"', path).encode("utf-8", "surrogateescape")

    def manifest(self, volume: str, path: str = "manifest.jsonl") -> list[dict[str, Any]]:
        """A manifest's entries: plain, or gzip-compressed as a store keeps it (uncompressed
        in the container: what `run` returns passes through the engine's logs as text)."""
        script = 'zcat "/v/$1" 2>/dev/null || cat "/v/$1"'
        raw = self.run({volume: "/v"}, script, path).encode("utf-8", "surrogateescape")
        return [json.loads(line) for line in raw.splitlines()]

    def snapshot_volumes(self, source: str) -> list[str]:
        return [
            v.name
            for v in self.client.volumes.list(
                filters={"label": f"io.voltool.snapshot.source={source}"}
            )
        ]

    def helper_mounts(self, volume: str) -> bool:
        """True while a voltool helper mounts `volume` (one list call: no race with removal)."""
        found = self.client.api.containers(all=True, filters={"label": "io.voltool.role=helper"})
        return any(m.get("Name") == volume for c in found for m in c.get("Mounts") or [])

    def related(self, volumes: list[str]) -> set[str]:
        """`volumes` and every snapshot volume of theirs."""
        names = set(volumes)
        for v in volumes:
            names.update(self.snapshot_volumes(v))
        return names

    def ours(self, c: dict[str, Any], volumes: set[str]) -> bool:
        """True if voltool's container `c` (an API list entry) concerns one of `volumes`:
        it mounts one, or is the lock or operation record of one."""
        labels = c.get("Labels") or {}
        if labels.get("io.voltool.lock.volume") in volumes:
            return True
        if set(labels.get("io.voltool.volumes", "").split(",")) & volumes:
            return True
        return any(m.get("Name") in volumes for m in c.get("Mounts") or [])

    def managed_containers(
        self, roles: tuple[str, ...] = ("helper", "lock", "record")
    ) -> list[str]:
        """Names of voltool's containers that concern this test's volumes (`scope`).

        One list call, so nothing races with a removal. Scoped, so that tests
        running at the same time on one engine do not see each other's.
        """
        volumes = self.related(self.scope + self.also)
        found = self.client.api.containers(all=True, filters={"label": "io.voltool.managed=true"})
        return [
            str(c["Names"][0]).lstrip("/")
            for c in found
            if (c.get("Labels") or {}).get("io.voltool.role") in roles and self.ours(c, volumes)
        ]

    def fake_snapshot_volume(
        self,
        sid: str,
        source: str,
        kind: str = "manual",
        created: str = "2026-01-01T00:00:00+00:00",
    ) -> str:
        """A volume labelled as a snapshot of `source`, with nothing in it (incomplete)."""
        name = f"voltool-snap-{sid}"
        self.client.volumes.create(
            name,
            labels={
                "io.voltool.managed": "true",
                "io.voltool.role": "snapshot",
                "io.voltool.format": "1",
                "io.voltool.snapshot.id": sid,
                "io.voltool.snapshot.source": source,
                "io.voltool.snapshot.created": created,
                "io.voltool.snapshot.kind": kind,
            },
        )
        return name

    def fake_complete_snapshot(
        self, sid: str, source: str, created: str, kind: str = "manual", pinned: bool = False
    ) -> str:
        """A complete, empty snapshot of `source` as if taken at `created` (ISO, UTC)."""
        name = self.fake_snapshot_volume(sid, source, kind, created)
        info = _empty_info(1, sid, source, created, kind)
        meta = {"name": None, "note": None, "pinned": pinned}
        self.run(
            {name: "/s"},
            'mkdir /s/data && printf "%s" "$1" > /s/meta.json '
            '&& printf "%s" "$2" > /s/snapshot.json',
            json.dumps(meta),
            json.dumps(info),
        )
        return name

    def fake_stored_snapshot(
        self,
        sid: str,
        source: str,
        created: str = "2026-01-01T00:00:00+00:00",
        kind: str = "manual",
        pinned: bool = False,
        complete: bool = True,
    ) -> str:
        """A snapshot of `source` in its store (format 2; the store is made if need be), empty,
        as if taken at `created` (ISO, UTC) by a process that is gone; without its commit
        marker unless `complete`. Returns the store's name."""
        store = f"voltool-store-{source}"
        if not self.client.volumes.list(filters={"name": store}):
            self.client.volumes.create(
                store,
                labels={
                    "io.voltool.managed": "true",
                    "io.voltool.role": "store",
                    "io.voltool.format": "2",
                    "io.voltool.snapshot.source": source,
                },
            )
        begun = {"id": sid, "source": source, "created": created, "kind": kind}
        begun |= {"op": "0" * 16, "owner": "nobody"}
        info = {**_empty_info(2, sid, source, created, kind), "started_ns": 0}
        meta = {"name": None, "note": None, "pinned": pinned}
        self.run(
            {store: "/s"},
            'd="/s/snapshots/$1" && mkdir -p "$d/data" && printf "%s" "$2" > "$d/begun.json" '
            '&& : > "$d/manifest.jsonl" && printf "%s" "$3" > "$d/meta.json" '
            '&& if [ -n "$4" ]; then printf "%s" "$4" > "$d/snapshot.json"; fi',
            sid,
            json.dumps(begun),
            json.dumps(meta),
            json.dumps(info) if complete else "",
        )
        return store

    def snapshot_ids(self, source: str) -> set[str]:
        """The ids of `source`'s snapshots as the engine holds them: format-1 snapshot
        volumes, and the directories of its store (what a delete renames away aside)."""
        ids = set()
        for name in self.snapshot_volumes(source):
            if name.startswith("voltool-snap-"):
                ids.add(name.removeprefix("voltool-snap-"))
            else:
                listed = self.run({name: "/s"}, "ls -A /s/snapshots 2>/dev/null || true")
                ids.update(n for n in listed.split() if not n.startswith("."))
        return ids

    def status(self, container: str) -> str:
        return str(self.client.api.inspect_container(container)["State"]["Status"])


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def records(text: str) -> list[Any]:
    """voltool's --json output: one JSON document per line (JSON Lines)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def voltool(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 300
) -> Result:
    """Run the real `voltool` in a child process, as a user would."""
    p = subprocess.run(
        [sys.executable, "-m", "voltool", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def start_voltool(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "voltool", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for(predicate: Any, timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


F1 = {"VOLTOOL_FORMAT": "1"}  # new snapshots in format 1 (a snapshot volume each)
F2 = {"VOLTOOL_FORMAT": "2"}  # new snapshots in format 2 (stores, the agent): the default


def in_snapshot(rec: dict[str, Any], name: str = "") -> str:
    """Where `name` (data, data/x, manifest.jsonl, meta.json...) of snapshot `rec` (its
    --json record) lies inside `rec["volume"]`: at the top of a format-1 snapshot volume,
    under snapshots/<id>/ in a store (format 2)."""
    if str(rec["volume"]).startswith("voltool-snap-"):
        return name
    return f"snapshots/{rec['id']}/{name}".rstrip("/")


def snapshot_record(vol: str, *more: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """`voltool snapshot --json VOL MORE...`, which must succeed: the new snapshot's record."""
    r = voltool("snapshot", "--json", vol, *more, env=env)
    assert r.code == 0, r.err
    (made,) = records(r.out)
    return made  # type: ignore[no-any-return]


def hold_env(step: str, hold_file: Path) -> dict[str, str]:
    return {"VOLTOOL_TEST_HOLD_AT": step, "VOLTOOL_TEST_HOLD_FILE": str(hold_file)}


AGENT_COPIED_A_FILE = "agent-copied-a-file"  # the agent's hold point (voltool/agent/report.py)


def _empty_info(fmt: int, sid: str, source: str, created: str, kind: str) -> dict[str, Any]:
    """The snapshot.json of an empty snapshot (its root alone) in format `fmt`."""
    return {
        "format": fmt,
        "id": sid,
        "source": source,
        "created": created,
        "kind": kind,
        "entries": 1,
        "bytes": 0,
        "tree_digest": "0" * 64,
        "quiesce": "none",
        "voltool": "test",
    }


def agent_held_mid_copy(
    dk: Docker, agent: str, vol: str, *argv: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], Any]:
    """Start `voltool ARGV` and return it with the helper that copies into or out of `vol`,
    once its agent has copied one file and stopped there for good (the agent's hold
    point), so that a test kills one or the other mid-copy deterministically, however
    fast the machine. A file linked rather than copied does not stop it."""
    proc = start_voltool(*argv, env={**(env or {}), "VOLTOOL_TEST_HOLD_AT": AGENT_COPIED_A_FILE})

    def held() -> list[Any]:
        return [
            c
            for c in dk.client.containers.list(filters={"label": "io.voltool.role=helper"})
            if any(m.get("Name") == vol for m in c.attrs["Mounts"])
            and c.attrs["Config"]["Image"] == agent
            and b'"event": "held"' in c.logs(stdout=False, stderr=True)
        ]

    (helper,) = wait_for(held, 120, "the agent to copy a file")
    return proc, helper


# A smaller tree for the many restore tests: every kind of entry, a few bytes each.
SMALL_TREE = r"""
set -e
cd /v
mkdir -p dir/sub keep
echo one > a.txt; echo two > dir/b.txt; echo three > dir/sub/c.txt
ln -s a.txt link; ln dir/b.txt hard; printf s > suid; chmod 4755 suid; ln suid suid-link
printf q > "with space"; chown 33:33 dir/sub; chmod 1777 keep
touch -d "2001-02-03 04:05:06" a.txt dir/sub
chmod 750 /v; chown 7:8 /v
"""

# Edits of every kind: change, add, delete, dir -> file, file -> symlink, root mode and owner.
CHANGES = r"""
set -e
cd /v
echo edited > a.txt
echo added > added.txt
rm dir/b.txt
rm -rf dir/sub; printf file > dir/sub
rm "with space"; ln -s a.txt "with space"
chmod 755 /v; chown 0:0 /v
"""

# An application that uses the volume, stops at once on SIGTERM and writes nothing.
IDLE_APP = "trap 'exit 0' TERM; while :; do sleep 0.1; done"
