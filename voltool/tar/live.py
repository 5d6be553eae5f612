"""A tree in a volume, read the same way a snapshot reads it: its manifest and digest.

Used by `digest`, `diff`, the restore's change summary and `--if-match`, and
by `verify` (on a snapshot volume's data/); and the room a volume has.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from voltool.engine.client import Mount
from voltool.errors import EngineError
from voltool.ids import new_id
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store.layout import Names
from voltool.store.manifest import Manifest
from voltool.tar.transfer import Transfer
from voltool.tar.validate import EntryValidator, Limits


def manifest_of(
    rt: Runtime,
    volume: str,
    op: str | None = None,
    own: Names | None = None,
    sub: str = "",
    label: str | None = None,
    total: int | None = None,
) -> Manifest:
    """The manifest of `volume` (or of its directory `sub`) as it is now.

    With `label`, the bytes read are reported as a transfer of `total` bytes (if known).

    The caller decides what must hold still. `own`: a running restore's
    working entries, left out of its own digest. Nothing else is left out: a
    name that merely looks like voltool's is data.
    """
    working = {own.stage, own.old, own.mark} if own else set()

    def skip(rel: str) -> bool:
        return rel.split("/", 1)[0] in working

    top = sub.rsplit("/", 1)[-1] if sub else "tree"
    path = f"/tree/{sub}" if sub else "/tree"
    labels = rt.helper_labels(op or new_id())
    with (
        rt.engine.helper(rt.image, [Mount(volume, "/tree", read_only=True)], labels) as cid,
        contextlib.closing(rt.engine.get_archive(cid, path)) as stream,
    ):
        transfer = Transfer(
            stream,
            EntryValidator(top, Limits(allow_special=True, read_only=True)),
            "tree",
            skip=skip,
            on_bytes=rt.reporter.advance if label else None,
        )
        if label:
            rt.reporter.begin(label, total)
        try:
            for _ in transfer:
                pass  # only the manifest is wanted; the re-emitted stream goes nowhere
        finally:
            if label:
                rt.reporter.end()
    return transfer.manifest


def digest_of(
    rt: Runtime,
    volume: str,
    fmt: int,
    op: str | None = None,
    own: Names | None = None,
    label: str | None = None,
) -> str:
    """The tree digest of `volume` as it is now, as a snapshot of it in format `fmt`
    would have it (the two formats' digests differ: see voltool/agent/digest.py).

    `own`: a running restore's working entries, left out. Format 1 reads the tree
    through the archive API (`label`: its progress); format 2 has the agent scan it
    in the engine, where it stays."""
    if fmt == 1:
        return manifest_of(rt, volume, op, own=own, label=label).digest()
    from voltool.engine import agent_image, agentrun

    working = [own.stage, own.old, own.mark] if own else []
    if label:
        rt.reporter.status(label)
    try:
        result = agentrun.run(
            rt,
            agent_image.agent_image(rt),
            op or new_id(),
            [Mount(volume, "/tree", read_only=True)],
            ["/tree", *working],
            script=program("agent-digest"),
        )
    finally:
        if label:
            rt.reporter.status(None)
    agentrun.checked(result, f"reading {volume}")
    digest = result.stdout.decode("ascii", "replace").strip()
    if len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise EngineError(f"reading {volume} failed: the agent gave no tree digest")
    return digest


@dataclass(frozen=True)
class Space:
    """What a volume's filesystem has room for, as a helper sees it (None: unknown)."""

    available: int | None  # bytes free
    used: int  # bytes the volume uses (0 where not measured)
    root_mtime: int | None
    inodes: int | None  # inodes free
    device: str | None = None  # the filesystem's device number: equal means one filesystem

    def shares_filesystem_with(self, other: Space) -> bool:
        """True unless both are known to be on different filesystems."""
        return self.device is None or other.device is None or self.device == other.device


def space(rt: Runtime, volume: str) -> Space:
    """Free bytes and inodes on `volume`'s filesystem, the bytes it uses, and its root's mtime."""
    return spaces(rt, volume)[0]


def spaces(rt: Runtime, volume: str, *others: str) -> list[Space]:
    """`space` of `volume`, and the free space on the filesystem of each of `others` (their
    `used` not measured), read by one helper."""
    mounts = [Mount(v, f"/v{i}", read_only=True) for i, v in enumerate((volume, *others))]
    result = rt.engine.run(
        rt.image,
        mounts,
        rt.helper_labels(new_id()),
        program("volume-space"),
        [m.path for m in mounts],
    )
    blocks = result.stdout.decode(errors="replace").split("\n-\n")
    found = [parse_space(b) for b in blocks]
    return found + [Space(None, 0, None, None)] * (len(mounts) - len(found))


def parse_space(out: str) -> Space:
    """What voltool/sh/volume-space.sh printed for one mount point, read; what cannot be
    read is unknown (None)."""
    lines = out.strip("\n").split("\n")
    try:
        available = int(lines[0].split()[3]) * 1024
        used = int(lines[1]) * 1024
        mtime = int(lines[2])
    except (IndexError, ValueError):
        return Space(None, 0, None, None)
    try:
        fields = lines[3].split()
        # btrfs and others count no inodes: df shows 0 in all, which means "unknown".
        inodes: int | None = int(fields[3]) if int(fields[1]) else None
    except (IndexError, ValueError):
        inodes = None
    device = lines[4].strip() if len(lines) > 4 and lines[4].strip().isdigit() else None
    return Space(available, used, mtime, inodes, device)
