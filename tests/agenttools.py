"""Running the agent as the helper image runs it, and reading what it says."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import voltool.agent

AGENT_SOURCE = Path(voltool.agent.__file__).parent
# Another name than voltool's: the copy must work with nothing of voltool importable.
PACKAGE = "vtagent_copy"
IGNORED = ("ino", "dev", "ctime_ns", "atime_ns")


def install_copy(parent: Path) -> Path:
    """A copy of voltool/agent alone, as package PACKAGE in `parent`."""
    target = parent / PACKAGE
    if not target.exists():
        shutil.copytree(AGENT_SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return parent


@dataclass(frozen=True)
class Run:
    rc: int
    out: bytes
    events: list[dict[str, Any]]  # every stderr line, parsed (each must be JSON)
    maxrss_kib: int

    @property
    def summary(self) -> dict[str, Any]:
        last = self.events[-1]
        assert last["event"] == "summary", self.events
        return last

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.out.splitlines()]

    def errors(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] in ("error", "fatal")]


class Agent:
    """Runs `python3 -I -m PACKAGE` with only the copy's parent directory on sys.path."""

    def __init__(self, parent: Path) -> None:
        self.parent = install_copy(parent)

    def __call__(self, *args: str | os.PathLike[str], stdin: bytes | None = None) -> Run:
        # -I drops PYTHONPATH and the current directory: put the parent on sys.path
        # the way the image does, run the package as -m would, and report the
        # process's own peak RSS on a pipe of its own. That is VmHWM, the high-water
        # mark of the program's own memory: ru_maxrss (RUSAGE_SELF) would also count
        # the pages of the parent that forked it, which Linux carries across exec.
        boot = (
            "import os, resource, runpy, sys; fd = int(sys.argv.pop(1)); "
            "sys.path.insert(0, sys.argv.pop(1)); "
            f"sys.argv[0] = {PACKAGE!r}\n"
            f"try: runpy.run_module({PACKAGE!r}, run_name='__main__', alter_sys=True)\n"
            "finally: os.write(fd, [l for l in open('/proc/self/status', 'rb') "
            "if l.startswith(b'VmHWM:')][0].split()[1])"
        )
        r, w = os.pipe()
        # -S as well: no site-packages, so voltool (installed in this venv) cannot be
        # imported, and neither can anything but the standard library.
        cmd = [sys.executable, "-I", "-S", "-c", boot, str(w), str(self.parent), *map(str, args)]
        try:
            p = subprocess.run(
                cmd,
                input=stdin,
                stdin=None if stdin is not None else subprocess.DEVNULL,
                capture_output=True,
                cwd="/",
                pass_fds=(w,),
                check=False,
            )
            os.close(w)
            w = -1
            maxrss = int(os.read(r, 64) or b"0")
        finally:
            os.close(r)
            if w != -1:
                os.close(w)
        err = p.stderr
        out = p.stdout
        events = [json.loads(line) for line in err.decode().splitlines()]
        return Run(p.returncode, out, events, maxrss)


def comparable(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Manifest lines without what a faithful copy changes: identity and ctime, atime."""
    return [{k: v for k, v in d.items() if k not in IGNORED} for d in lines]


def by_path(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {json.dumps(d["path"]): d for d in lines}


def xattr_support(directory: Path) -> str | None:
    """Why user.* xattrs and POSIX ACLs cannot be tested in `directory`, or None if they can."""
    probe = directory / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
        os.setxattr(probe, "system.posix_acl_access", ACL)
    except OSError as e:
        return f"{directory} ({fs_type(directory)}) refuses xattrs: {e}"
    finally:
        probe.unlink()
    return None


def fs_type(path: Path) -> str:
    """The filesystem type `path` is on, from /proc/self/mounts (longest mount prefix)."""
    best, kind = "", "unknown"
    real = str(path.resolve())
    with open("/proc/self/mounts") as f:
        for line in f:
            _, mount, fstype, *_ = line.split()
            if (real == mount or real.startswith(mount.rstrip("/") + "/")) and len(mount) > len(
                best
            ):
                best, kind = mount, fstype
    return kind


def _acl(*entries: tuple[int, int, int]) -> bytes:
    """The xattr form of a POSIX ACL: version 2, then (tag, perm, id) per entry."""
    import struct

    return struct.pack("<I", 2) + b"".join(struct.pack("<HHI", *e) for e in entries)


_NONE = 0xFFFFFFFF
# user::rw- user:1000:r-- group::r-- mask::r-- other::---
ACL = _acl((0x01, 6, _NONE), (0x02, 4, 1000), (0x04, 4, _NONE), (0x10, 4, _NONE), (0x20, 0, _NONE))
# a file capability, revision 2, effective, permitted: cap_net_bind_service (10)
CAPABILITY = (0x02000001).to_bytes(4, "little") + (1 << 10).to_bytes(4, "little") + bytes(12)
