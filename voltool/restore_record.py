"""What a restore records of each volume it restores, for `recover` to finish or undo it.

One structure, written by voltool.ops.restore into the operation's begin record (a
single restore's fields at the top of that record, a group's as a list under
"members") and read back by voltool.ops.recover. Read back from the engine, it is
data: every field is checked, and what does not read well stops that
operation's recovery, never another's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from voltool.errors import VoltoolError
from voltool.ids import is_valid_id
from voltool.store.manifest import ManifestEntry
from voltool.words import quoted


@dataclass(frozen=True)
class MemberRecord:
    """One volume of a restore."""

    target: str
    snapshot: str  # the id of the snapshot restored into it
    snapshot_volume: str  # where that snapshot lives (its volume, or its store)
    root: ManifestEntry | None  # the snapshot's root: the volume root gets its mode and owner
    old_mtime: int | None  # the target root's mtime before the restore (None: unknown)
    safety: str | None  # the id the pre-restore snapshot gets (None: none is kept)
    create: bool  # the restore creates the target

    @property
    def root_entry(self) -> ManifestEntry:
        """The root, which the caller asked to be read (`from_json`'s `need_root`)."""
        if self.root is None:
            raise VoltoolError("its record of the snapshot's root was not read")
        return self.root

    def to_json(self) -> dict[str, Any]:
        root = self.root_entry
        return {
            "target": self.target,
            "snapshot": self.snapshot,
            "snapshot_volume": self.snapshot_volume,
            "root": {"mode": root.mode, "uid": root.uid, "gid": root.gid, "mtime": root.mtime},
            "old_mtime": self.old_mtime,
            "safety": self.safety,
            "create": self.create,
        }

    @classmethod
    def from_json(cls, d: object, volumes: list[str], need_root: bool) -> MemberRecord:
        """A member as a begin record gives it; VoltoolError if it does not read well.

        `volumes`: what the operation locked (its target must be one); `need_root`:
        the root is read (and must be well-formed) only where it will be used."""
        if not isinstance(d, dict):
            raise VoltoolError("its record of the volumes it restores is unreadable")
        target = str(d.get("target", ""))
        if target not in volumes:
            raise VoltoolError(f"its target {quoted(target)} is not among the volumes it locked")
        old_mtime = d.get("old_mtime")
        safety = d.get("safety")
        return cls(
            target,
            str(d.get("snapshot")),
            str(d.get("snapshot_volume")),
            _root(d.get("root")) if need_root else None,
            old_mtime if isinstance(old_mtime, int) and not isinstance(old_mtime, bool) else None,
            safety if isinstance(safety, str) and is_valid_id(safety) else None,
            d.get("create") is True,
        )


def members(data: dict[str, Any], volumes: list[str], need_root: bool) -> list[MemberRecord]:
    """The members a restore's merged records describe: a group's list, or the one a
    single restore's begin record holds at its top."""
    described = data.get("members") if "members" in data else [data]
    if not isinstance(described, list) or not described:
        raise VoltoolError("its record of the volumes it restores is unreadable")
    return [MemberRecord.from_json(m, volumes, need_root) for m in described]


def _root(root: object) -> ManifestEntry:
    """The snapshot's root entry, as the restore recorded it."""
    if (
        not isinstance(root, dict)
        or not all(isinstance(root.get(k), int) for k in ("mode", "uid", "gid", "mtime"))
        or not 0 <= root["mode"] <= 0o7777
        or not all(0 <= root[k] < 2**32 - 1 for k in ("uid", "gid"))
    ):
        raise VoltoolError("its record of the snapshot's root is unreadable")
    return ManifestEntry(
        ".", "dir", int(root["mode"]), int(root["uid"]), int(root["gid"]), 0, int(root["mtime"])
    )
