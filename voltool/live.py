"""A tree in a volume, read the same way a snapshot reads it: its manifest and digest.

Used by `digest`, `diff`, the restore's change summary and `--if-match`, and
by `verify` (on a snapshot volume's data/); and the room a volume has.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from voltool.engine import Mount
from voltool.ids import new_id
from voltool.layout import Names
from voltool.manifest import Manifest
from voltool.runtime import Runtime
from voltool.transfer import Transfer
from voltool.validate import EntryValidator, Limits


def manifest_of(
    rt: Runtime, volume: str, op: str | None = None, own: Names | None = None, sub: str = ""
) -> Manifest:
    """The manifest of `volume` (or of its directory `sub`) as it is now.

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
        )
        for _ in transfer:
            pass  # only the manifest is wanted; the re-emitted stream goes nowhere
    return transfer.manifest


_SPACE = "df -Pk /v | tail -n 1; du -sk /v | cut -f1; stat -c %Y /v; df -Pi /v | tail -n 1"


@dataclass(frozen=True)
class Space:
    """What a volume's filesystem has room for, as a helper sees it (None: unknown)."""

    available: int | None  # bytes free
    used: int  # bytes the volume uses
    root_mtime: int | None
    inodes: int | None  # inodes free


def space(rt: Runtime, volume: str) -> Space:
    """Free bytes and inodes on `volume`'s filesystem, the bytes it uses, and its root's mtime."""
    result = rt.engine.run(
        rt.image, [Mount(volume, "/v", read_only=True)], rt.helper_labels(new_id()), _SPACE
    )
    return parse_space(result.stdout.decode(errors="replace"))


def parse_space(out: str) -> Space:
    """What `_SPACE` printed, read; what cannot be read is unknown (None)."""
    lines = out.split("\n")
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
    return Space(available, used, mtime, inodes)
