"""Format 2: one store volume per source volume, each snapshot a directory in it.

    voltool-store-<source>/                 labels: io.voltool.role=store, its source
      snapshots/<id>/begun.json             written first: what the snapshot is
      snapshots/<id>/data/                  the tree, as the agent copied it
      snapshots/<id>/manifest.jsonl         the agent's manifest of data/ (gzip; plain in
                                            stores made before manifests were compressed)
      snapshots/<id>/meta.json              user-editable (voltool.store.layout.Meta)
      snapshots/<id>/snapshot.json          written last, by rename: the commit marker

A file unchanged since the previous snapshot of the same volume is a hard link
to that snapshot's file (voltool/agent/copy.py decides), so a snapshot costs
what changed. Nothing writes into a stored file in place: data/ is written
once by the agent, metadata files are replaced by rename.

Invariants:
- A snapshot directory without snapshot.json is incomplete: never listed as
  usable, and removed by its creator's rollback or by `recover` once its
  creator (named in begun.json) is gone.
- A deleted snapshot's directory is first renamed to `snapshots/.gone-<id>`,
  then removed: a cut delete never leaves a half-removed snapshot listed.
- Every store has a keeper (voltool.engine.keepers) from before its first snapshot
  until it is removed with its last one, so `docker volume prune` never takes it.
- Everything read back from a store is data to validate, as for format 1.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass

from voltool.engine import labels as L
from voltool.engine.client import Mount
from voltool.errors import EngineError, IntegrityError, NotFound, PreconditionFailed, VoltoolError
from voltool.ids import is_valid_id, new_id
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store.layout import MAX_METADATA_FILE
from voltool.words import quoted

FORMAT = 2
STORE_PREFIX = "voltool-store-"
SNAPSHOTS = "snapshots"
BEGUN = "begun.json"
GONE_PREFIX = ".gone-"
MOUNT = "/store"  # where helpers mount a store


def store_name(source: str) -> str:
    """The store volume of `source`: its name, readable where it fits in a volume name."""
    name = STORE_PREFIX + source
    if len(name) <= 255:
        return name
    return f"{STORE_PREFIX}{source[:200]}-{hashlib.sha256(source.encode()).hexdigest()[:16]}"


def snapshot_dir(sid: str) -> str:
    """The snapshot's directory inside its store; refuses anything that is not an id."""
    if not is_valid_id(sid):
        raise ValueError(f"not a snapshot id: {quoted(sid)}")
    return f"{SNAPSHOTS}/{sid}"


@dataclass(frozen=True)
class Begun:
    """begun.json: what a snapshot is, written before any of its data."""

    id: str
    source: str
    created: str  # ISO 8601, UTC, to the second
    kind: str
    op: str
    owner: str

    def to_json(self) -> bytes:
        return (json.dumps(self.__dict__, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes, sid: str, source: str) -> Begun:
        try:
            data = json.loads(raw)
        except ValueError:
            raise IntegrityError(f"{BEGUN} is not JSON") from None
        if not isinstance(data, dict) or set(data) != set(cls.__dataclass_fields__):
            raise IntegrityError(f"{BEGUN} has unknown or missing fields")
        if not all(isinstance(v, str) and len(v) <= 255 for v in data.values()):
            raise IntegrityError(f"{BEGUN} is malformed")
        begun = cls(**data)
        if begun.id != sid or begun.source != source:
            raise IntegrityError(f"{BEGUN} names another snapshot or volume than its place")
        try:
            dt.datetime.fromisoformat(begun.created)
        except ValueError:
            raise IntegrityError(f"{BEGUN}: created is malformed") from None
        return begun


def store_labels(rt: Runtime, op: str, source: str) -> dict[str, str]:
    return {
        **L.managed(L.ROLE_STORE, op, rt.owner.token()),
        L.FORMAT: str(FORMAT),
        L.SOURCE: source,
    }


def ensure_store(rt: Runtime, source: str, op: str) -> str:
    """The store of `source`, made (with its keeper) if it is not there; returns its name.

    Call it under the store's lock: a store that is there must be one of voltool's
    for that very source, or nothing is written into it.
    """
    from voltool.engine import keepers

    name = store_name(source)
    try:
        found = rt.engine.volume(name)
    except NotFound:
        found = rt.engine.create_volume(name, store_labels(rt, op, source))
    if found.labels.get(L.ROLE) != L.ROLE_STORE or found.labels.get(L.SOURCE) != source:
        raise PreconditionFailed(
            f"volume {quoted(name)} is in the way of the store of {quoted(source)}: "
            "it is not one of voltool's stores for that volume"
        )
    keepers.protect_store(rt, name, op)
    return name


def stores(rt: Runtime, source: str | None = None) -> dict[str, str]:
    """Every store in the engine (or `source`'s): store volume name -> source volume."""
    filters = [f"{L.ROLE}={L.ROLE_STORE}"]
    if source:
        filters.append(f"{L.SOURCE}={source}")
    found = {}
    for v in rt.engine.volumes(filters):
        src = v.labels.get(L.SOURCE, "")
        if v.name == store_name(src):  # a store is only where voltool would put it
            found[v.name] = src
    return found


@dataclass(frozen=True)
class Listed:
    """One snapshot directory of a store, with the metadata files it holds (None: there,
    but unreadable; a file absent is absent from `files`)."""

    store: str
    source: str
    id: str
    files: dict[str, bytes | None]


_FILES = (BEGUN, "snapshot.json", "meta.json")


def read_stores(rt: Runtime, names: dict[str, str]) -> list[Listed]:
    """The snapshot directories of the stores `names` (store -> source), read by one helper."""
    if not names:
        return []
    ordered = sorted(names)
    mounts = [Mount(s, f"/st/{i}", read_only=True) for i, s in enumerate(ordered)]
    result = rt.engine.run(
        rt.image,
        mounts,
        rt.helper_labels(new_id()),
        program("store-read"),
        [str(MAX_METADATA_FILE + 1), *map(str, range(len(ordered)))],
    )
    lines = result.stdout.decode("ascii", "replace").splitlines()
    if result.exit_code != 0 or len(lines) < 2 or lines[0] != "BEGIN" or lines[-1] != "END":
        raise VoltoolError("reading the snapshot stores failed or was cut short")
    found: dict[tuple[int, str], dict[str, bytes | None]] = {}
    for line in lines[1:-1]:
        path, _, value = line.partition(" ")
        index, sid, fname = [*path.split("/"), "", ""][:3]
        if not index.isdigit() or int(index) >= len(ordered) or not is_valid_id(sid):
            raise EngineError("reading the snapshot stores gave malformed output")
        files = found.setdefault((int(index), sid), {})
        if fname == "":
            continue
        if fname not in _FILES:
            raise EngineError("reading the snapshot stores gave malformed output")
        try:
            content = None if value == "!" else bytes.fromhex(value)
        except ValueError:
            raise EngineError("reading the snapshot stores gave malformed output") from None
        files[fname] = None if content is not None and len(content) > MAX_METADATA_FILE else content
    return [Listed(ordered[i], names[ordered[i]], sid, files) for (i, sid), files in found.items()]


def delete_dir(rt: Runtime, store: str, sid: str, op: str) -> None:
    """Remove snapshot `sid`'s directory from `store` (under the store's lock)."""
    snapshot_dir(sid)  # an id, nothing else, names what is removed
    result = rt.engine.run(
        rt.image, [Mount(store, MOUNT)], rt.helper_labels(op), program("store-delete"), [sid]
    )
    if result.exit_code != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        raise EngineError(
            f"removing snapshot {sid} from {quoted(store)} failed: "
            f"{said[-1] if said else result.exit_code}"
        )


def remove_if_empty(rt: Runtime, store: str, op: str) -> bool:
    """Remove `store` and its keeper if it holds no snapshot any more (under its lock)."""
    from voltool.engine import keepers

    mounts = [Mount(store, MOUNT, read_only=True)]
    result = rt.engine.run(rt.image, mounts, rt.helper_labels(op), program("store-empty"))
    if result.exit_code != 0:
        return False
    keepers.remove_snapshot_volume(rt, store)
    return True


@dataclass(frozen=True)
class Usage:
    """What a store holds on disk."""

    store: str
    source: str
    alone: dict[str, int]  # complete snapshot id -> bytes of files no other snapshot shares
    total: int  # bytes in use by the whole store, each file counted once


def usage(rt: Runtime, name: str, source: str) -> Usage:
    """Walk the store (one helper) and say what each snapshot alone holds.

    A file counts as a snapshot's own when its link count is 1: one that is
    hard-linked inside that snapshot alone (a hard-link group of its source)
    is counted as shared, so the figure is a lower bound."""
    mounts = [Mount(name, MOUNT, read_only=True)]
    result = rt.engine.run(rt.image, mounts, rt.helper_labels(new_id()), program("store-usage"))
    alone: dict[str, int] = {}
    total = None
    for line in result.stdout.decode("ascii", "replace").splitlines():
        key, _, value = line.partition(" ")
        if not value.isdigit():
            continue
        if key == "total":
            total = int(value)
        elif is_valid_id(key):
            alone[key] = int(value)
    if result.exit_code != 0 or total is None:
        raise EngineError(f"measuring the store {quoted(name)} failed")
    return Usage(name, source, alone, total)
