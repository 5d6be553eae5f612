"""Who holds a lock or made a helper: a process identity that can be checked for life.

A token is "host/boot-id/pid/start-time/uid/pid-namespace". A holder on this
machine, in our pid namespace, is dead when the boot id differs (the machine
restarted), no process has its pid, or the process with that pid started at
another time (the pid was reused). A holder on another host, or in another pid
namespace (a container sharing the host's name), cannot be checked: it is
presumed alive, and only a person can say otherwise (`recover --abandoned`).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class Owner:
    host: str
    boot_id: str
    pid: int
    start: str
    uid: int
    pidns: str = ""  # the pid namespace ("" in tokens of older voltools: ours, presumed)

    def token(self) -> str:
        return f"{self.host}/{self.boot_id}/{self.pid}/{self.start}/{self.uid}/{self.pidns}"

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        parts = token.split("/")
        if len(parts) == 5:
            parts.append("")
        if len(parts) != 6:
            return None
        host, boot_id, pid, start, uid, pidns = parts
        try:
            return cls(host, boot_id, int(pid), start, int(uid), pidns)
        except ValueError:
            return None

    @property
    def checkable(self) -> bool:
        """True if whether this holder lives can be told from here."""
        me = current()
        return self.host == me.host and (not self.pidns or self.pidns == me.pidns)

    def describe(self) -> str:
        return f"pid {self.pid} (uid {self.uid}) on {self.host}"

    def is_local(self) -> bool:
        me = current()
        return self.host == me.host

    def is_alive(self) -> bool:
        """False only when this holder is provably gone; remote holders count as alive."""
        me = current()
        if not self.checkable:
            return True
        if self.boot_id != me.boot_id:
            return False
        return _process_start(self.pid) == self.start


@cache
def current() -> Owner:
    pid = os.getpid()
    return Owner(
        socket.gethostname(), _boot_id(), pid, _process_start(pid) or "?", os.getuid(), _pidns()
    )


def _pidns() -> str:
    """Our pid namespace's inode ("" where there is none to read)."""
    try:
        return os.readlink("/proc/self/ns/pid").removeprefix("pid:[").removesuffix("]")
    except OSError:
        return ""


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip().replace("-", "")[:16]
    except OSError:
        return "noboot"


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot, or None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return _process_exists_fallback(pid)
    # Field 22; the command name (field 2) may hold spaces and parentheses.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return fields[19].decode()


def _process_exists_fallback(pid: int) -> str | None:
    """Without /proc (macOS clients) only existence can be checked."""
    if os.path.isdir("/proc"):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return "?"
    return "?"
