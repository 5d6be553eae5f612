"""A second, private dockerd for tests that need an engine configured otherwise.

It shares nothing with the machine's engine: its own data root, exec root (and
so its own containerd), socket, pid file, containerd namespaces, and bridge.
It never touches iptables, and never runs with `--bridge none`: that deletes
the first daemon's docker0 (DESIGN.md, engine facts).
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors

BRIDGE = "vt-br0"
BRIDGE_ADDRESS = "10.213.0.1/24"
START_SECONDS = 30
STOP_SECONDS = 30


class CannotStart(Exception):
    """The second daemon could not be started here (one line: why)."""


@dataclass
class SecondDaemon:
    root: Path
    process: subprocess.Popen[bytes]
    bridge_made: bool
    bridge: str = BRIDGE

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    @property
    def log(self) -> Path:
        return self.root / "dockerd.log"

    def client(self) -> docker.DockerClient:
        return docker.DockerClient(base_url=self.host, timeout=120)

    def stop(self) -> None:
        """Stop the daemon, then remove its bridge and its directories. Idempotent."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_SECONDS)
        _unmount_below(self.root)
        shutil.rmtree(self.root, ignore_errors=True)
        if self.bridge_made:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, check=False)
            self.bridge_made = False


def start(*extra: str, bridge: str = BRIDGE, address: str = BRIDGE_ADDRESS) -> SecondDaemon:
    """Start a dockerd with `extra` options, on a bridge of its own named `bridge` with
    `address`; ready (answers a ping) or CannotStart.

    Bounded in time: the socket is polled for at most START_SECONDS.
    """
    dockerd = shutil.which("dockerd")
    ip = shutil.which("ip")
    if dockerd is None or ip is None:
        raise CannotStart("dockerd or ip is not installed")
    if os.geteuid() != 0:
        raise CannotStart("starting a dockerd needs root")
    sweep_stale()
    if bridge_exists(bridge):
        # Not ours: never take over (or later delete) a bridge we did not make.
        raise CannotStart(f"a network interface named {bridge} exists already")
    root = Path(tempfile.mkdtemp(prefix="vt-dockerd-", dir="/tmp"))
    bridge_made = False
    process: subprocess.Popen[bytes] | None = None
    try:
        for args in (
            ("link", "add", bridge, "type", "bridge"),
            ("addr", "add", address, "dev", bridge),
            ("link", "set", bridge, "up"),
        ):
            done = _run_ip(*args)
            bridge_made = bridge_made or args[1] == "add"
            if done.returncode != 0:
                raise CannotStart(f"ip {' '.join(args)}: {done.stderr.strip()}")
        (root / "daemon.json").write_text("{}\n")  # not /etc/docker/daemon.json
        with open(root / "dockerd.log", "wb") as log:
            process = subprocess.Popen(
                [
                    dockerd,
                    "--config-file", str(root / "daemon.json"),
                    "--data-root", str(root / "data"),
                    "--exec-root", str(root / "exec"),
                    "--pidfile", str(root / "docker.pid"),
                    "-H", f"unix://{root / 'docker.sock'}",
                    "--bridge", bridge,
                    "--iptables=false",
                    "--ip-masq=false",
                    "--ip-forward=false",
                    "--containerd-namespace", "vt-moby",
                    "--containerd-plugins-namespace", "vt-plugins",
                    *extra,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )  # fmt: skip
        daemon = SecondDaemon(root, process, bridge_made, bridge)
        _wait_ready(daemon)
        return daemon
    except BaseException:
        if process is not None:
            SecondDaemon(root, process, bridge_made, bridge).stop()
        else:
            _undo(root, bridge_made, bridge)
        raise


def _die_with_parent() -> None:
    """In the child, before dockerd runs: SIGTERM it when the test process that started it
    dies, however it dies (a run killed gives its daemons no chance to be stopped)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# Bridges this module names after the test process that made them (conftest.py):
# vt<pid>w<worker>, vl<pid>w<worker>.
_OURS = re.compile(r"^v[tl](\d+)w\d+$")
_STALE_SECONDS = 300


def sweep_stale() -> None:
    """Remove what daemons of test processes that died left: their bridges, and their
    directories (unmounted first) once no daemon runs from them and they are older than a
    few minutes (one being set up has no pid file yet)."""
    links = _run_ip("-o", "link", "show").stdout.splitlines()
    for line in links:
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        m = _OURS.match(name)
        if m and not Path(f"/proc/{m[1]}").exists():
            _run_ip("link", "del", name)
    for root in Path("/tmp").glob("vt-dockerd-*"):
        try:
            if time.time() - root.stat().st_mtime < _STALE_SECONDS:
                continue
            pid = int((root / "docker.pid").read_text().strip() or 0)
        except (OSError, ValueError):
            pid = 0
        if pid and Path(f"/proc/{pid}").exists():
            continue
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)


def _wait_ready(daemon: SecondDaemon) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if daemon.process.poll() is not None:
            raise CannotStart(f"dockerd exited ({daemon.process.returncode}): {_tail(daemon.log)}")
        if daemon.socket.exists():
            client = daemon.client()
            try:
                client.ping()
                return
            except docker.errors.DockerException:
                pass  # listening, not answering yet
            finally:
                client.close()
        time.sleep(0.2)
    raise CannotStart(f"dockerd did not answer within {START_SECONDS} s: {_tail(daemon.log)}")


def bridge_exists(bridge: str = BRIDGE) -> bool:
    return _run_ip("link", "show", bridge).returncode == 0


def _undo(root: Path, bridge_made: bool, bridge: str) -> None:
    shutil.rmtree(root, ignore_errors=True)
    if bridge_made:
        _run_ip("link", "del", bridge)


def _run_ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def _tail(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(lines[-3:])


def _unmount_below(root: Path) -> None:
    """Lazily unmount whatever the daemon left mounted under `root`, deepest first."""
    prefix = str(root) + "/"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return
    points = [line.split()[4] for line in lines]
    for point in sorted({p for p in points if p.startswith(prefix)}, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
