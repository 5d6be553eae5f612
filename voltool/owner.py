"""Who holds a lock or made a helper: a process identity that can be checked for life.

A token is "host/boot-id/pid/start-time/uid". A holder on this machine is dead
when the boot id differs (the machine restarted), no process has its pid, or
the process with that pid started at another time (the pid was reused). A
holder on another host cannot be checked: it is presumed alive.
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

    def token(self) -> str:
        return f"{self.host}/{self.boot_id}/{self.pid}/{self.start}/{self.uid}"

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        parts = token.split("/")
        if len(parts) != 5:
            return None
        host, boot_id, pid, start, uid = parts
        try:
            return cls(host, boot_id, int(pid), start, int(uid))
        except ValueError:
            return None

    def describe(self) -> str:
        return f"pid {self.pid} (uid {self.uid}) on {self.host}"

    def is_local(self) -> bool:
        me = current()
        return self.host == me.host

    def is_alive(self) -> bool:
        """False only when this holder is provably gone; remote holders count as alive."""
        me = current()
        if self.host != me.host:
            return True
        if self.boot_id != me.boot_id:
            return False
        return _process_start(self.pid) == self.start


@cache
def current() -> Owner:
    pid = os.getpid()
    return Owner(socket.gethostname(), _boot_id(), pid, _process_start(pid) or "?", os.getuid())


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
