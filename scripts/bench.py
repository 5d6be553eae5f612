"""Benchmarks: voltool against `docker cp | docker cp` and an in-container tar pipe, one run.

Run it with `bash scripts/bench.sh` (which sets up the engine and the
virtualenv first). For each dataset, in rounds, interleaved (the order of
voltool and the baselines alternates each round), it times:

- snapshot: `voltool snapshot` (manifest included) / `docker cp SRC:/src/. - |
  docker cp - DST:/dst` through two created helpers / `tar -C /src -cf - . |
  tar -C /dst -xf -` inside one container (no data through the client);
- restore: `voltool restore` total, and the downtime of a container using the
  volume (engine events: from its "die" to its "start");
- verify, export (zstd, to /dev/null), export to a file and import of it;
- list with 200 snapshots present, and the tiny dataset's snapshot end to end;
- format 2 (stores, the agent), once per dataset: the first snapshot, the
  incremental one after 1% of the files changed, what the store grew by,
  restore (total, and its downtime) and verify; the agent's peak RSS as it
  reports it (its own VmHWM);
- copies off the machine, once per dataset: `voltool push` of those two
  snapshots to a restic repository in a directory, and `voltool pull` of the
  first, against `restic backup` of the volume's directory (and `restic
  restore`) run directly on this host, into a repository of their own; the
  bytes each repository holds after the first and the second.

The rounds take their snapshots in format 1 (a snapshot volume each, through
the archive API), so that their rows compare with earlier reports; the format-2
rows ask for format 2, the default.

Every voltool run is a child process; its peak RSS is its own VmHWM. The
report (Markdown, with the machine it ran on) and the raw numbers (JSON) are
written to docs/. Everything it creates is labelled and removed at the end,
also on Ctrl-C. Timings are medians; ratios are paired per round.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voltool import __version__  # noqa: E402
from voltool.engine import helper_image  # noqa: E402
from voltool.engine.client import Engine  # noqa: E402
from voltool.engine.endpoint import resolve  # noqa: E402
from voltool.report import Reporter  # noqa: E402

LABEL = "io.voltool.bench"
# voltool, run so that it reports its own peak RSS as it exits: VmHWM of its
# own address space. (wait4's ru_maxrss would also count the pages of this
# script, which the child held between fork and exec.)
_MEASURED = """
import atexit, os, re, runpy, sys
def report():
    status = open("/proc/self/status").read()
    kib = re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)
    with open(os.environ["VOLTOOL_BENCH_RSS"], "w") as f:
        f.write(kib)
atexit.register(report)
sys.argv = ["voltool", *sys.argv[1:]]
runpy.run_module("voltool", run_name="__main__")
"""
MiB = 1 << 20
F1 = {"VOLTOOL_FORMAT": "1"}
F2 = {"VOLTOOL_FORMAT": "2"}
# ext4 without a journal (this machine's) creates files slowly for a while
# after a large delete: let the disk settle before timing writes again.
SETTLE = 30.0


@dataclass(frozen=True)
class Dataset:
    key: str
    title: str
    files: int
    dirs: int
    min_size: int
    max_size: int


FULL = {
    "A": Dataset("A", "2 GiB in 8 files of 256 MiB", 8, 1, 256 * MiB, 256 * MiB),
    "B": Dataset("B", "100,000 files of 1-8 KiB in 1,000 directories", 100_000, 1000, 1024, 8192),
    "C": Dataset("C", "10 small files", 10, 1, 100, 1000),
}
# --million: memory at scale (format 2 only): peak RSS of voltool and of the agent.
MILLION = Dataset("M", "1,000,000 files of 1-7 bytes in 1,000 directories", 1_000_000, 1000, 1, 7)
QUICK = {
    "A": Dataset("A", "128 MiB in 8 files of 16 MiB (quick)", 8, 1, 16 * MiB, 16 * MiB),
    "B": Dataset("B", "5,000 files of 1-8 KiB in 50 directories (quick)", 5000, 50, 1024, 8192),
    "C": Dataset("C", "10 small files", 10, 1, 100, 1000),
}


@dataclass
class Run:
    seconds: float
    rss_mib: float | None = None  # peak RSS of the voltool process


@dataclass
class Results:
    runs: dict[str, dict[str, list[Run]]] = field(default_factory=dict)
    downtime: dict[str, list[float]] = field(default_factory=dict)
    stored_downtime: dict[str, float] = field(default_factory=dict)
    agent_rss: dict[str, float] = field(default_factory=dict)  # MiB, as the agent reports it
    growth: dict[str, tuple[int, int]] = field(default_factory=dict)  # store growth, data bytes
    # Repository bytes after the first and after the incremental: voltool's, restic's direct.
    stored_bytes: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)

    def add(self, dataset: str, op: str, run: Run) -> None:
        self.runs.setdefault(dataset, {}).setdefault(op, []).append(run)


class Bench:
    def __init__(self, rounds: int, quick: bool, workdir: Path) -> None:
        self.rounds = rounds
        self.sets = QUICK if quick else FULL
        self.workdir = workdir
        self.client = docker.from_env(timeout=3600)
        engine = Engine.connect(resolve(None, None), 3600)
        self.image = helper_image.ensure(engine, "busybox", "/bin/busybox", Reporter())
        self.results = Results()
        self.direct_sizes: dict[str, tuple[int, int]] = {}
        self.tag = uuid.uuid4().hex[:6]
        # The rounds measure format 1 (its rows came first and stay comparable from one
        # report to the next); the format-2 rows ask for format 2 (F2).
        self.env = {**os.environ, **F1, "VOLTOOL_STATE_DIR": str(workdir / "state")}

    # -- engine helpers ------------------------------------------------------

    def volume(self, name: str) -> str:
        full = f"vb-{self.tag}-{name}"
        self.client.volumes.create(full, labels={LABEL: self.tag})
        return full

    def sh(self, mounts: dict[str, str], script: str) -> float:
        """Run a script in a helper container; its wall time (container start included)."""
        start = time.perf_counter()
        self.client.containers.run(
            self.image,
            ["-c", script],
            entrypoint=["/bin/sh"],
            volumes={v: {"bind": p, "mode": "rw"} for v, p in mounts.items()},
            network_mode="none",
            remove=True,
            labels={LABEL: self.tag},
        )
        return time.perf_counter() - start

    def fill(self, volume: str, ds: Dataset) -> None:
        """Write the dataset into `volume`: random content, random sizes in its range."""
        rng = random.Random(ds.key)
        path = self.workdir / f"fill-{ds.key}.tar"
        with tarfile.open(path, "w") as tar:
            for d in range(ds.dirs):
                info = tarfile.TarInfo(f"d{d:04}")
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            for i in range(ds.files):
                size = rng.randint(ds.min_size, ds.max_size)
                info = tarfile.TarInfo(f"d{i % ds.dirs:04}/f{i:06}")
                info.size = size
                tar.addfile(info, _RandomReader(size))
        holder = self.client.containers.create(
            self.image,
            ["true"],
            volumes={volume: {"bind": "/v", "mode": "rw"}},
            labels={LABEL: self.tag},
        )
        try:
            with open(path, "rb") as f:
                holder.put_archive("/v", f)
        finally:
            holder.remove(force=True)
            path.unlink()

    def voltool(
        self, *args: str, stdout: Any = subprocess.PIPE, env: dict[str, str] | None = None
    ) -> tuple[Run, str]:
        """Run voltool as a child; wall time and its own peak RSS (its VmHWM at exit)."""
        rss_file = self.workdir / "rss"
        rss_file.unlink(missing_ok=True)
        start = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-c", _MEASURED, *args],
            stdout=stdout,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={**self.env, **(env or {}), "VOLTOOL_BENCH_RSS": str(rss_file)},
        )
        out = b""
        if stdout is subprocess.PIPE:
            assert proc.stdout is not None
            out = proc.stdout.read()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.wait()
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"voltool {' '.join(args)}: exit {proc.returncode}: {err.decode()}")
        return Run(seconds, int(rss_file.read_text()) / 1024), out.decode()

    def docker_cp_pipe(self, src: str) -> float:
        """`docker cp SRC:/src/. - | docker cp - DST:/dst` through two created helpers."""
        dst = self.volume(f"cp-{uuid.uuid4().hex[:6]}")
        a = self.client.containers.create(
            self.image,
            ["true"],
            volumes={src: {"bind": "/src", "mode": "ro"}},
            labels={LABEL: self.tag},
        )
        b = self.client.containers.create(
            self.image,
            ["true"],
            volumes={dst: {"bind": "/dst", "mode": "rw"}},
            labels={LABEL: self.tag},
        )
        try:
            start = time.perf_counter()
            reader = subprocess.Popen(
                ["docker", "cp", f"{a.id}:/src/.", "-"], stdout=subprocess.PIPE
            )
            writer = subprocess.run(["docker", "cp", "-", f"{b.id}:/dst"], stdin=reader.stdout)
            assert reader.stdout is not None
            reader.stdout.close()
            if reader.wait() != 0 or writer.returncode != 0:
                raise RuntimeError("docker cp pipe failed")
            return time.perf_counter() - start
        finally:
            a.remove(force=True)
            b.remove(force=True)

    def tar_pipe(self, src: str) -> float:
        dst = self.volume(f"tar-{uuid.uuid4().hex[:6]}")
        return self.sh({src: "/src", dst: "/dst"}, "tar -C /src -cf - . | tar -C /dst -xf -")

    def app(self, volume: str) -> Any:
        return self.client.containers.run(
            self.image,
            ["-c", "trap 'exit 0' TERM; while :; do sleep 0.1; done"],
            entrypoint=["/bin/sh"],
            volumes={volume: {"bind": "/data", "mode": "rw"}},
            network_mode="none",
            detach=True,
            labels={LABEL: self.tag},
        )

    def downtime(self, container_id: str, since: float, until: float) -> float | None:
        """Seconds from the container's last "die" to its next "start" in [since, until]."""
        died = started = None
        for ev in self.client.events(
            since=int(since) - 1,
            until=int(until) + 1,
            filters={"container": container_id},
            decode=True,
        ):
            t = ev.get("timeNano", 0) / 1e9
            if ev.get("status") == "die" and t >= since - 1:
                died = t
            elif ev.get("status") == "start" and died is not None and t >= died:
                started = t
        return None if died is None or started is None else started - died

    def cleanup(self) -> None:
        """Remove what the run made: its containers, its volumes, their snapshots and stores
        (with whatever mounts them: voltool's keepers)."""
        for c in self.client.containers.list(all=True, filters={"label": LABEL}):
            c.remove(force=True)
        doomed = []
        for v in self.client.volumes.list(filters={"label": LABEL}):
            doomed += self.client.volumes.list(
                filters={"label": f"io.voltool.snapshot.source={v.name}"}
            )
            doomed.append(v)
        for s in self.client.volumes.list(filters={"label": "io.voltool.role=snapshot"}):
            labels = s.attrs.get("Labels") or {}
            if labels.get("io.voltool.snapshot.source", "").startswith("vb-"):
                doomed.append(s)
        for v in doomed:
            for attempt in range(20):
                for c in self.client.containers.list(all=True, filters={"volume": v.name}):
                    with contextlib.suppress(docker.errors.NotFound):
                        c.remove(force=True)
                try:
                    v.remove(force=True)
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError:  # a removal the engine has not finished yet
                    if attempt == 19:
                        raise
                    time.sleep(0.5)

    # -- the measurements ------------------------------------------------------

    def dataset(self, ds: Dataset) -> None:
        log(f"dataset {ds.key}: {ds.title}: creating")
        src = self.volume(f"src-{ds.key}")
        self.fill(src, ds)
        time.sleep(SETTLE if ds.files > 1000 or ds.max_size > MiB else 0)
        snapshots: list[str] = []
        for r in range(self.rounds):
            log(f"dataset {ds.key}: round {r + 1}/{self.rounds}: snapshot and baselines")
            order = ["voltool", "cp", "tar"] if r % 2 == 0 else ["tar", "cp", "voltool"]
            for who in order:
                if who == "voltool":
                    run, out = self.voltool("snapshot", "--json", src)
                    snapshots.append(json.loads(out.splitlines()[0])["id"])
                    self.results.add(ds.key, "snapshot", run)
                elif who == "cp":
                    self.results.add(ds.key, "docker cp pipe", Run(self.docker_cp_pipe(src)))
                else:
                    self.results.add(ds.key, "tar pipe in a container", Run(self.tar_pipe(src)))
        sid = snapshots[0]
        app = self.app(src)
        try:
            for r in range(self.rounds):
                log(f"dataset {ds.key}: round {r + 1}/{self.rounds}: restore, verify, export")
                since = time.time()
                run, _ = self.voltool("restore", sid, "--yes")
                until = time.time()
                self.results.add(ds.key, "restore (total)", run)
                down = self.downtime(app.id, since, until)
                if down is not None:
                    self.results.downtime.setdefault(ds.key, []).append(down)
                self.results.add(ds.key, "verify", self.voltool("verify", sid)[0])
                with open(os.devnull, "wb") as null:
                    self.results.add(
                        ds.key,
                        "export zstd > /dev/null",
                        self.voltool("export", sid, stdout=null)[0],
                    )
                path = self.workdir / f"export-{ds.key}.tar.zst"
                self.results.add(
                    ds.key, "export -o file", self.voltool("export", sid, "-o", str(path))[0]
                )
                run, _ = self.voltool("import", str(path), "--volume", src, "--json")
                self.results.add(ds.key, "import file", run)
                path.unlink()
        finally:
            app.remove(force=True)
        self.stored(ds, src)

    def stored(self, ds: Dataset, src: str) -> None:
        """Format 2, once per dataset: the first snapshot into an empty store, the
        incremental one after 1% of the files changed (one file of A's eight), what the
        store grew by, restore and verify; the agent's peak RSS as it reports it."""
        log(f"dataset {ds.key}: format 2: first snapshot, incremental, restore")
        for s in self.client.volumes.list(filters={"label": f"io.voltool.snapshot.source={src}"}):
            for c in self.client.containers.list(all=True, filters={"volume": s.name}):
                c.remove(force=True)
            s.remove(force=True)
        time.sleep(SETTLE if ds.files > 1000 or ds.max_size > MiB else 0)
        run, out = self.voltool("snapshot", "--json", src, env=F2)
        first = json.loads(out.splitlines()[0])
        self.results.add(ds.key, "format 2: first snapshot", run)
        self.results.agent_rss[f"{ds.key}: first snapshot"] = first["copy"]["peak_rss_kib"] / 1024
        before = self.store_bytes(src)
        direct = self.workdir / f"direct-{ds.key}"
        self.restic_direct("init", repo=direct)
        base_first = self.direct_backup(src, direct)
        direct_first = _du(direct)
        every = max(ds.files // 100, 1)
        step = max(ds.files // every, 1)
        self.sh(
            {src: "/v"},
            f"find /v -type f | sort | awk 'NR % {step} == 1' | head -n {every}"
            ' | while read -r f; do head -c "$(stat -c %s "$f")" /dev/urandom > "$f.new"'
            ' && mv "$f.new" "$f"; done',
        )
        run, out = self.voltool("snapshot", "--json", src, env=F2)
        second = json.loads(out.splitlines()[0])
        self.results.add(ds.key, f"format 2: incremental ({every} files changed)", run)
        self.results.agent_rss[f"{ds.key}: incremental"] = second["copy"]["peak_rss_kib"] / 1024
        self.results.growth[ds.key] = (self.store_bytes(src) - before, first["bytes"])
        base = (base_first, self.direct_backup(src, direct))
        self.direct_sizes[ds.key] = (direct_first, _du(direct))
        app = self.app(src)
        try:
            since = time.time()
            self.results.add(
                ds.key, "format 2: restore (total)", self.agent_measured(ds, "restore", first["id"])
            )
            down = self.downtime(app.id, since, time.time())
            if down is not None:
                self.results.stored_downtime[ds.key] = down
        finally:
            app.remove(force=True)
        verified = self.agent_measured(ds, "verify", second["id"])
        self.results.add(ds.key, "format 2: verify", verified)
        self.remote(ds, first["id"], second["id"], base)

    def restic_direct(self, *args: str, repo: Path) -> float:
        """restic run on this host (no container), as a user without voltool would."""
        start = time.perf_counter()
        subprocess.run(
            ["restic", "-r", str(repo), "--no-cache", "--quiet", *args],
            check=True,
            env={**os.environ, "RESTIC_PASSWORD": "bench"},
            stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - start

    def direct_backup(self, src: str, repo: Path) -> float:
        """`restic backup` of the volume's directory on this host (a local engine's)."""
        mountpoint = self.client.volumes.get(src).attrs["Mountpoint"]
        return self.restic_direct("backup", "--host", "bench", mountpoint, repo=repo)

    def remote(self, ds: Dataset, first: str, second: str, base: tuple[float, float]) -> None:
        """Push both format-2 snapshots to a repository in a directory, pull the first back;
        `base`: `restic backup` run directly, of the volume as each snapshot took it."""
        log(f"dataset {ds.key}: copies off the machine: push, pull")
        repo = self.workdir / f"repo-{ds.key}"
        password = self.workdir / "restic.pass"
        password.write_text("bench\n")
        env = {**F2, "VOLTOOL_CONFIG": str(self.workdir / f"config-{ds.key}.toml")}
        self.voltool("remote", "add", "bench", str(repo), "--password-file", str(password), env=env)
        self.voltool("remote", "init", "bench", env=env)
        run, _ = self.voltool("push", first, "--remote", "bench", "--json", env=env)
        self.results.add(ds.key, "push (first)", run)
        self.results.add(ds.key, "restic backup directly (first)", Run(base[0]))
        after_first = _du(repo)
        run, _ = self.voltool("push", second, "--remote", "bench", "--json", env=env)
        self.results.add(ds.key, "push (incremental)", run)
        self.results.add(ds.key, "restic backup directly (incremental)", Run(base[1]))
        self.results.stored_bytes[ds.key] = {
            "voltool push": (after_first, _du(repo)),
            "restic backup directly": self.direct_sizes[ds.key],
        }
        run, out = self.voltool("pull", "bench", first, "--json", env=env)
        self.results.add(ds.key, "pull", run)
        pulled = json.loads(out.splitlines()[0])["id"]
        self.voltool("delete", pulled, "--yes", env=env)
        target = self.workdir / f"restored-{ds.key}"
        base_repo = self.workdir / f"direct-{ds.key}"
        self.results.add(
            ds.key,
            "restic restore directly",
            Run(self.restic_direct("restore", "latest", "--target", str(target), repo=base_repo)),
        )
        for path in (repo, base_repo, target):
            subprocess.run(["rm", "-rf", str(path)], check=False)

    def million(self, ds: Dataset) -> None:
        """Peak RSS at scale, format 2 only: the first snapshot, an incremental one after
        1% of the files changed, and a restore; voltool's own and the agent's. The files
        are written inside a helper (a shell loop, no process per file)."""
        log(f"dataset {ds.key}: {ds.title}: creating")
        src = self.volume(f"src-{ds.key}")
        per = ds.files // ds.dirs
        self.sh(
            {src: "/v"},
            f"cd /v && for d in $(seq -w 0 {ds.dirs - 1}); do mkdir d$d; i=0; "
            f'while [ $i -lt {per} ]; do echo $i > "d$d/f$i"; i=$((i + 1)); done; done',
        )
        time.sleep(SETTLE)
        log(f"dataset {ds.key}: format 2: first snapshot")
        run, out = self.voltool("snapshot", "--json", src, env=F2)
        first = json.loads(out.splitlines()[0])
        self.results.add(ds.key, "format 2: first snapshot", run)
        self.results.agent_rss[f"{ds.key}: first snapshot"] = first["copy"]["peak_rss_kib"] / 1024
        every = ds.files // 100
        self.sh(
            {src: "/v"},
            f"cd /v && for d in d*; do i=0; while [ $i -lt {per // 100} ]; do "
            'echo changed > "$d/f$i"; i=$((i + 1)); done; done',
        )
        log(f"dataset {ds.key}: format 2: incremental")
        run, out = self.voltool("snapshot", "--json", src, env=F2)
        second = json.loads(out.splitlines()[0])
        self.results.add(ds.key, f"format 2: incremental ({every} files changed)", run)
        self.results.agent_rss[f"{ds.key}: incremental"] = second["copy"]["peak_rss_kib"] / 1024
        log(f"dataset {ds.key}: format 2: restore")
        self.results.add(
            ds.key, "format 2: restore (total)", self.agent_measured(ds, "restore", first["id"])
        )
        log(f"dataset {ds.key}: format 2: verify")
        verified = self.agent_measured(ds, "verify", second["id"])
        self.results.add(ds.key, "format 2: verify", verified)

    def agent_measured(self, ds: Dataset, command: str, sid: str) -> Run:
        """`voltool COMMAND SID` (restore or verify, format 2), timed, and the agent's peak
        RSS over every run it made (a restore's plan, staging copy, pre-restore copy and
        settled check), which voltool reports only for snapshots."""
        log_file = self.workdir / "agent-rss"
        log_file.unlink(missing_ok=True)
        env = {**F2, "VOLTOOL_BENCH_AGENT_RSS": str(log_file)}
        more = ["--yes"] if command == "restore" else []
        run, _ = self.voltool(command, sid, *more, "--json", env=env)
        said = [json.loads(line) for line in log_file.read_text().splitlines()]
        peak = max(s["peak_rss_kib"] for s in said) / 1024
        self.results.agent_rss[f"{ds.key}: {command}"] = peak
        return run

    def store_bytes(self, src: str) -> int:
        _, out = self.voltool("du", src, "--json")
        return sum(
            r["total_bytes"] for r in map(json.loads, out.splitlines()) if "total_bytes" in r
        )

    def listing(self) -> None:
        log("list: making 200 snapshots of 20 tiny volumes")
        vols = [self.volume(f"list-{i:02}") for i in range(20)]
        self.sh({v: f"/v{i}" for i, v in enumerate(vols)}, "for d in /v*; do echo x > $d/f; done")
        for _ in range(10):
            self.voltool("snapshot", "--no-quiesce", *vols)
        count = sum(
            1 for s in self.client.volumes.list(filters={"label": "io.voltool.role=snapshot"})
        )
        for _ in range(self.rounds):
            self.results.add("list", f"list ({count} snapshots)", self.voltool("list")[0])
            self.results.add(
                "list", f"list --json ({count} snapshots)", self.voltool("list", "--json")[0]
            )


class _RandomReader(io.RawIOBase):
    """`size` random bytes, read in pieces (tarfile reads the content it adds)."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        n = min(len(b), self.left)
        b[:n] = os.urandom(n)
        self.left -= n
        return n


def _du(path: Path) -> int:
    """Bytes of the files under `path` (a repository written by root inside a helper)."""
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def machine(client: docker.DockerClient) -> dict[str, str]:
    info = client.info()
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    fs = (
        subprocess.run(
            ["df", "-T", info.get("DockerRootDir", "/var/lib/docker")],
            capture_output=True,
            text=True,
        )
        .stdout.splitlines()[-1]
        .split()
    )
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu} ({os.cpu_count()} cores)",
        "memory": f"{info.get('MemTotal', 0) / 2**30:.1f} GiB",
        "kernel": platform.release(),
        "engine": f"Docker Engine {info.get('ServerVersion')} ({info.get('Driver')} driver)",
        "disk": f"{fs[1]} on {fs[0]}" if len(fs) > 1 else "?",
        "python": platform.python_version(),
        "voltool": f"{__version__} (commit {_commit()})",
    }


def _commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return out.stdout.strip() or "?"


# -- the report --------------------------------------------------------------


def report(res: Results, info: dict[str, str], sets: dict[str, Dataset], rounds: int) -> str:
    lines = ["# voltool benchmarks", ""]
    lines.append(
        "Made by `bash scripts/bench.sh` in one run: "
        f"{rounds} rounds, voltool and the baselines interleaved (their order alternating "
        "each round). Times are wall-clock seconds of the whole command (process start "
        "included); medians, with the range. Peak RSS is the voltool process's own "
        "(VmHWM as it exits), the largest of the rounds."
    )
    lines += ["", "## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    checks: list[tuple[str, str, bool]] = []
    for key, ops in res.runs.items():
        title = sets[key].title if key in sets else "list with 200 snapshots"
        lines += ["", f"## {key if key in sets else 'list'}: {title}", ""]
        lines += ["| operation | median s | range s | peak RSS MiB |", "|---|---:|---:|---:|"]
        for op, runs in ops.items():
            secs = [r.seconds for r in runs]
            rss = [r.rss_mib for r in runs if r.rss_mib is not None]
            lines.append(
                f"| {op} | {statistics.median(secs):.2f} | {min(secs):.2f}-{max(secs):.2f} | "
                + (f"{max(rss):.0f}" if rss else "-")
                + " |"
            )
            if rss:
                checks.append(
                    (f"{key}: {op}: peak RSS <= 64 MiB", f"{max(rss):.0f} MiB", max(rss) <= 64)
                )
        if "snapshot" in ops and "docker cp pipe" in ops:
            snap = [r.seconds for r in ops["snapshot"]]
            cp = [r.seconds for r in ops["docker cp pipe"]]
            tar = [r.seconds for r in ops["tar pipe in a container"]]
            per_cp = [s / c for s, c in zip(snap, cp, strict=True)]
            per_tar = [s / t for s, t in zip(snap, tar, strict=True)]
            lines += [
                "",
                "snapshot / docker cp pipe, per round: "
                + ", ".join(f"{x:.2f}" for x in per_cp)
                + f" (median {statistics.median(per_cp):.2f}x)",
                "",
                "snapshot / tar pipe in a container, per round: "
                + ", ".join(f"{x:.2f}" for x in per_tar)
                + f" (median {statistics.median(per_tar):.2f}x)",
            ]
            if key in ("A", "B"):
                m = statistics.median(per_cp)
                checks.append((f"{key}: snapshot <= 1.0x docker cp pipe", f"{m:.2f}x", m <= 1.0))
            if key == "C":
                m = statistics.median(snap)
                checks.append(("C: tiny snapshot end to end <= 0.5 s", f"{m:.2f} s", m <= 0.5))
        if key in res.downtime:
            down = res.downtime[key]
            lines += [
                "",
                "restore downtime (container die -> start, engine events), per round: "
                + ", ".join(f"{x:.2f} s" for x in down),
            ]
            checks.append(
                (f"{key}: restore downtime <= 2 s", f"{max(down):.2f} s (worst)", max(down) <= 2)
            )
        first = ops.get("format 2: first snapshot")
        if first and "docker cp pipe" in ops:
            cp_med = statistics.median(r.seconds for r in ops["docker cp pipe"])
            tar_med = statistics.median(r.seconds for r in ops["tar pipe in a container"])
            f2 = first[0].seconds
            incremental = next(v for k, v in ops.items() if k.startswith("format 2: incremental"))
            inc = incremental[0].seconds
            restore = ops["format 2: restore (total)"][0].seconds
            grew, size = res.growth[key]
            lines += [
                "",
                f"format 2: first snapshot / docker cp pipe (median): {f2 / cp_med:.2f}x; "
                f"incremental / first: {inc / f2:.2f}x; store growth for it: "
                f"{grew / MiB:.1f} MiB ({100 * grew / size:.1f}% of {size / MiB:.0f} MiB); "
                f"restore total / tar pipe in a container (median): {restore / tar_med:.2f}x",
            ]
            agent_rss = {k: v for k, v in res.agent_rss.items() if k.startswith(f"{key}:")}
            lines += [
                "",
                "agent peak RSS: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in agent_rss.items()),
            ]
            if key in res.stored_downtime:
                lines += ["", f"format 2 restore downtime: {res.stored_downtime[key]:.2f} s"]
            if key in ("A", "B"):
                checks.append(
                    (
                        f"{key}: format 2 first snapshot <= 0.5x docker cp pipe",
                        f"{f2 / cp_med:.2f}x",
                        f2 / cp_med <= 0.5,
                    )
                )
                checks.append(
                    (
                        f"{key}: format 2 restore total <= 1.5x tar pipe",
                        f"{restore / tar_med:.2f}x",
                        restore / tar_med <= 1.5,
                    )
                )
                worst = max(agent_rss.values()) if agent_rss else 0
                checks.append((f"{key}: agent peak RSS <= 64 MiB", f"{worst:.0f} MiB", worst <= 64))
            if key == "B":
                checks.append(
                    ("B: format 2 incremental <= 0.2x first", f"{inc / f2:.2f}x", inc / f2 <= 0.2)
                )
                checks.append(
                    ("B: store growth <= 5% of B", f"{100 * grew / size:.1f}%", grew <= 0.05 * size)
                )
        if "push (first)" in ops:
            pairs = [
                ("push (first)", "restic backup directly (first)"),
                ("push (incremental)", "restic backup directly (incremental)"),
                ("pull", "restic restore directly"),
            ]
            lines += ["", "copies off the machine, voltool / restic run directly:"]
            for ours, theirs in pairs:
                a, b = ops[ours][0].seconds, ops[theirs][0].seconds
                lines.append(f"- {ours}: {a:.2f} s / {b:.2f} s = {a / b:.2f}x")
            for who, (one, two) in res.stored_bytes.get(key, {}).items():
                lines.append(
                    f"- repository bytes, {who}: {one / MiB:.1f} MiB after the first, "
                    f"{(two - one) / MiB:.2f} MiB added by the incremental"
                )
        if key == MILLION.key:
            agent_rss = {k: v for k, v in res.agent_rss.items() if k.startswith(f"{key}:")}
            lines += [
                "",
                "agent peak RSS: " + ", ".join(f"{k} {v:.0f} MiB" for k, v in agent_rss.items()),
            ]
            worst = max(agent_rss.values()) if agent_rss else 0
            checks.append((f"{key}: agent peak RSS <= 64 MiB", f"{worst:.0f} MiB", worst <= 64))
        if key == "list":
            for op, runs in ops.items():
                m = statistics.median(r.seconds for r in runs)
                checks.append((f"{op} <= 1 s", f"{m:.2f} s", m <= 1.0))
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---:|:---:|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in checks]
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--datasets", default="A,B,C")
    p.add_argument("--quick", action="store_true", help="small datasets, to try the script")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    p.add_argument(
        "--million",
        action="store_true",
        help="also measure peak RSS with 1,000,000 entries (format 2; adds about 30 minutes)",
    )
    p.add_argument("--no-list", action="store_true", help="leave out the list measurement")
    a = p.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="voltool-bench-"))
    bench = Bench(a.rounds, a.quick, workdir)
    try:
        bench.cleanup()
        info = machine(bench.client)
        for key in filter(None, a.datasets.split(",")):
            bench.dataset(bench.sets[key])
            bench.cleanup()
            time.sleep(SETTLE if key in ("A", "B") and not a.quick else 0)
        if not a.no_list:
            bench.listing()
        if a.million:
            bench.sets = {**bench.sets, MILLION.key: MILLION}
            bench.million(MILLION)
    finally:
        bench.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(bench.results, info, bench.sets, a.rounds))
    raw = {
        "machine": info,
        "runs": {
            k: {op: [r.__dict__ for r in rs] for op, rs in ops.items()}
            for k, ops in bench.results.runs.items()
        },
        "downtime": bench.results.downtime,
        "format 2": {
            "downtime": bench.results.stored_downtime,
            "agent_rss_mib": bench.results.agent_rss,
            "store_growth": bench.results.growth,
        },
        "repository_bytes": bench.results.stored_bytes,
    }
    out.with_suffix(".json").write_text(json.dumps(raw, indent=2) + "\n")
    log(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
