"""Finding snapshots, reading their metadata, resolving references, deleting them.

Listing reads the snapshot volumes' labels (one engine call) and then every
snapshot's snapshot.json and meta.json through ONE started helper that mounts
them all read-only: listing N snapshots never starts N containers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from voltool.engine import labels as L
from voltool.engine.client import Mount, NameConflict, OutputTooLarge, VolumeInfo
from voltool.engine.keepers import remove_snapshot_volume
from voltool.engine.locks import volume_lock
from voltool.errors import (
    AmbiguousReference,
    Busy,
    EngineError,
    IntegrityError,
    NotFound,
    PreconditionFailed,
    UsageError,
    VoltoolError,
)
from voltool.ids import (
    SNAPSHOT_VOLUME_PREFIX,
    check_volume_name,
    is_valid_id,
    new_id,
    snapshot_volume_name,
)
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import format2
from voltool.store.layout import (
    MANIFEST,
    MAX_METADATA_FILE,
    META,
    SNAPSHOT,
    Meta,
    SnapshotInfo,
    check_manifest,
    manifest_bound,
)
from voltool.store.manifest import Manifest
from voltool.words import quoted

MIN_PREFIX = 4
_MOUNTS_PER_READER = 256
_BOUND = f"{MAX_METADATA_FILE // 1024} KiB"


@dataclass(frozen=True)
class Snapshot:
    """A snapshot as the engine's labels and its metadata files describe it."""

    id: str
    volume: str
    source: str
    created: dt.datetime
    kind: str
    owner: str = ""  # token of the process that created it (voltool.owner)
    committed: bool = False  # snapshot.json is there (whether or not it reads well)
    info: SnapshotInfo | None = None  # None: incomplete, or its snapshot.json is bad
    meta: Meta | None = None
    problem: str | None = None  # why info or meta could not be read
    format_label: str = ""  # the volume's format label, held against snapshot.json
    op: str = ""  # the operation that took it: snapshots taken together share it
    base: str = ""  # where in `volume` it lives: "" (format 1), "snapshots/<id>" (a store's)

    def path(self, name: str) -> str:
        """The path of `name` (data, manifest.jsonl, ...) relative to `volume`'s root."""
        return f"{self.base}/{name}" if self.base else name

    @property
    def in_store(self) -> bool:
        """Format 2: a directory of a store volume, not a volume of its own."""
        return bool(self.base)

    @property
    def state(self) -> str:
        """complete; damaged (committed, but its metadata does not read well); incomplete."""
        if self.info is not None and self.problem is None:
            return "complete"
        return "damaged" if self.committed else "incomplete"

    @property
    def name(self) -> str | None:
        return self.meta.name if self.meta else None

    @property
    def pinned(self) -> bool:
        return bool(self.meta and self.meta.pinned)


def from_labels(volume: str, lab: dict[str, str]) -> Snapshot | None:
    """A Snapshot from a volume's labels, or None if they are not a valid voltool set."""
    sid = lab.get(L.SNAPSHOT_ID, "")
    if not is_valid_id(sid) or volume != SNAPSHOT_VOLUME_PREFIX + sid:
        return None
    try:
        created = dt.datetime.fromisoformat(lab.get(L.CREATED, ""))
    except ValueError:
        return None
    if created.tzinfo is None:
        created = created.replace(tzinfo=dt.UTC)
    return Snapshot(
        sid,
        volume,
        lab.get(L.SOURCE, "?"),
        created,
        lab.get(L.KIND, "?"),
        lab.get(L.OWNER, ""),
        format_label=lab.get(L.FORMAT, ""),
        op=lab.get(L.OP, ""),
    )


def find(rt: Runtime, source: str | None = None) -> list[Snapshot]:
    """Every snapshot, oldest first: format-1 snapshot volumes known from their labels alone
    (metadata not read), and the snapshots of format-2 stores, read with their metadata
    by one helper (none when there is no helper image: `rt.image` is "")."""
    filters = [f"{L.ROLE}={L.ROLE_SNAPSHOT}"]
    if source:
        filters.append(f"{L.SOURCE}={source}")
    found = [from_labels(v.name, v.labels) for v in rt.engine.volumes(filters)]
    if rt.image:
        found += _in_stores(rt, format2.stores(rt, source))
    return sorted((s for s in found if s is not None), key=lambda s: (s.created, s.id))


def _in_stores(rt: Runtime, stores: dict[str, str]) -> list[Snapshot]:
    """The snapshots of `stores` (store -> source), each with its metadata read."""
    found = []
    for start in range(0, len(stores), _MOUNTS_PER_READER):
        batch = dict(sorted(stores.items())[start : start + _MOUNTS_PER_READER])
        found += [from_store(listed) for listed in _read_stores(rt, batch)]
    return found


def _read_stores(rt: Runtime, stores: dict[str, str]) -> list[format2.Listed]:
    """What `stores` hold, read by one helper; by halves if that says more than a helper
    may (many stores of many snapshots). A store too large alone to be read (altered:
    voltool's own metadata is a few KiB a snapshot) is left out with a warning, so
    that it cannot hide every other store's snapshots."""
    try:
        return format2.read_stores(rt, stores)
    except OutputTooLarge:
        if len(stores) == 1:
            [name] = stores
            rt.reporter.warn(
                f"store {quoted(name)} cannot be listed: its snapshot directories hold more "
                "metadata than one helper may print (an altered store, or tens of thousands "
                "of snapshots); its snapshots are left out"
            )
            return []
    items = sorted(stores.items())
    half = len(items) // 2
    return _read_stores(rt, dict(items[:half])) + _read_stores(rt, dict(items[half:]))


def from_store(listed: format2.Listed) -> Snapshot:
    """A format-2 snapshot from what its directory holds; what it is comes from begun.json.

    A directory whose begun.json does not read well is still listed (as damaged,
    or incomplete if it has no snapshot.json): never silently hidden.
    """
    problem = None
    created = dt.datetime.fromtimestamp(0, dt.UTC)
    kind = owner = op = "?"
    raw = listed.files.get(format2.BEGUN)
    try:
        if raw is None:
            raise IntegrityError(f"{format2.BEGUN} is missing or unreadable")
        begun = format2.Begun.parse(raw, listed.id, listed.source)
        created = dt.datetime.fromisoformat(begun.created)
        if created.tzinfo is None:
            created = created.replace(tzinfo=dt.UTC)
        kind, owner, op = begun.kind, begun.owner, begun.op
    except IntegrityError as e:
        problem = str(e)
    s = Snapshot(
        listed.id,
        listed.store,
        listed.source,
        created,
        kind,
        owner,
        format_label=str(format2.FORMAT),
        op=op,
        base=format2.snapshot_dir(listed.id),
    )
    s = _attach(s, listed.files)
    if problem:
        s = replace(s, info=None, problem="; ".join(p for p in (problem, s.problem) if p))
    return s


def with_metadata(rt: Runtime, snapshots: list[Snapshot]) -> list[Snapshot]:
    """The same snapshots with snapshot.json and meta.json read (again) and validated."""
    files: dict[str, dict[str, bytes | None]] = {}
    plain = [s for s in snapshots if not s.in_store]
    for start in range(0, len(plain), _MOUNTS_PER_READER):
        batch = plain[start : start + _MOUNTS_PER_READER]
        files.update(_read_metadata_files(rt, batch))
    stored = {s.volume: s.source for s in snapshots if s.in_store}
    # By store and id: a store can be altered to hold another store's id.
    again = {(s.volume, s.id): s for s in _in_stores(rt, stored)}
    return [
        (
            again.get((s.volume, s.id))
            or replace(s, committed=False, info=None, problem="it was deleted")
        )
        if s.in_store
        else _attach(s, files.get(s.id, {}))
        for s in snapshots
    ]


def completed(rt: Runtime, found: list[Snapshot]) -> list[Snapshot]:
    """Snapshots as `find` returned them, each with its metadata: a store's came with
    theirs, format-1 snapshot volumes' are read (by one helper, if there are any)."""
    plain = iter(with_metadata(rt, [s for s in found if not s.in_store]))
    return [s if s.in_store else next(plain) for s in found]


def list_snapshots(rt: Runtime, source: str | None = None) -> list[Snapshot]:
    """Every snapshot (of `source`), with its metadata: one helper reads the stores, and
    one more the format-1 snapshot volumes, if there are any."""
    return completed(rt, find(rt, source))


def _read_metadata_files(rt: Runtime, batch: list[Snapshot]) -> dict[str, dict[str, bytes | None]]:
    if not batch:
        return {}
    mounts = [Mount(s.volume, f"/s/{s.id}", read_only=True) for s in batch]
    result = rt.engine.run(
        rt.image,
        mounts,
        rt.helper_labels(new_id()),
        program("format1-read-meta"),
        [str(MAX_METADATA_FILE + 1)],
    )
    if result.exit_code != 0:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        why = said[-1][:200] if said else f"its helper exited with {result.exit_code}"
        raise VoltoolError(f"reading snapshot metadata failed: {why}")
    return _parse_framed(result.stdout, {s.id for s in batch})


def _parse_framed(out: bytes, ids: set[str]) -> dict[str, dict[str, bytes | None]]:
    """The reader's lines, by snapshot id and file name (None: there, but unreadable).

    Anything but exactly the reader's format (BEGIN, well-formed lines about
    snapshots of this batch, END) is an error: a line lost must never turn a
    present snapshot.json into an absent one.
    """
    lines = out.decode("ascii", "replace").splitlines()
    if len(lines) < 2 or lines[0] != "BEGIN" or lines[-1] != "END":
        raise EngineError("reading snapshot metadata was cut short")
    files: dict[str, dict[str, bytes | None]] = {}
    for line in lines[1:-1]:
        path, _, value = line.partition(" ")
        sid, _, fname = path.partition("/")
        if sid not in ids or fname not in (SNAPSHOT, META):
            raise EngineError("reading snapshot metadata gave malformed output")
        try:
            content = None if value == "!" else bytes.fromhex(value)
        except ValueError:
            raise EngineError("reading snapshot metadata gave malformed output") from None
        if content is not None and len(content) > MAX_METADATA_FILE:
            content = None  # over the bound: there, but not read
        files.setdefault(sid, {})[fname] = content
    return files


def _attach(s: Snapshot, found: dict[str, bytes | None]) -> Snapshot:
    if not s.in_store and s.kind == "pulled":
        # A pull's temporary volume (voltool.ops.remote) is never a snapshot: restic writes
        # into it, so a snapshot.json there is not voltool's commit marker.
        found = {k: v for k, v in found.items() if k != SNAPSHOT}
    info = meta = None
    problems = []
    raw = found.get(SNAPSHOT)
    if SNAPSHOT in found:
        try:
            if raw is None:
                raise IntegrityError(
                    f"{SNAPSHOT} is not a regular file of at most {MAX_METADATA_FILE // 1024} KiB"
                )
            info = SnapshotInfo.parse(raw, expected_id=s.id)
            check_labels(s, info)
        except IntegrityError as e:
            problems.append(str(e))
    raw_meta = found.get(META)
    if META in found:
        try:
            if raw_meta is None:
                raise IntegrityError(
                    f"{META} is not a regular file of at most {MAX_METADATA_FILE // 1024} KiB"
                )
            meta = Meta.parse(raw_meta)
        except IntegrityError as e:
            problems.append(str(e))
    elif info is not None:
        problems.append(f"{META} is missing")
    return replace(
        s, committed=SNAPSHOT in found, info=info, meta=meta, problem="; ".join(problems) or None
    )


def check_labels(s: Snapshot, info: SnapshotInfo) -> None:
    """snapshot.json agrees with every field its volume's labels carry (a stored
    snapshot's: its begun.json and its store's), or IntegrityError.

    The labels are fixed when the volume is made (begun.json, before the data)
    and decide what a snapshot is listed as and restored into; a snapshot.json
    that says otherwise was rewritten or damaged, and neither can be trusted.
    """
    created = dt.datetime.fromisoformat(info.created.replace("Z", "+00:00"))  # checked by parse
    pairs = (
        ("format", str(info.format), s.format_label),
        ("id", info.id, s.id),
        ("source", info.source, s.source),
        ("created", created, s.created),
        ("kind", info.kind, s.kind),
    )
    # A stored snapshot's are its store's: begun.json, its place, the store's labels.
    where, there = (
        (f"its store's {format2.BEGUN}", format2.BEGUN)
        if s.in_store
        else ("its volume's labels", "the labels")
    )
    for field, in_file, in_label in pairs:
        if in_file != in_label:
            shown = in_label.isoformat() if isinstance(in_label, dt.datetime) else in_label
            raise IntegrityError(
                f"{SNAPSHOT} disagrees with {where} on {field}: "
                f"{quoted(getattr(info, field))} in the file, {quoted(shown)} in {there}"
            )


def resolve(
    rt: Runtime,
    ref: str | None = None,
    name: str | None = None,
    volume: str | None = None,
    prefer: str | None = None,
) -> Snapshot:
    """The one snapshot that `ref` (id, id prefix, volume name) or `name` selects, with metadata.

    Names are unique per volume, so a name is looked up among the snapshots of
    `volume` only, when one is given (`--volume`); else among those of
    `prefer` (the volume the command is about: restore's `--to`, diff's
    VOLUME) if any of them has it, else among all. Raises NotFound when none
    matches and AmbiguousReference, listing each candidate's volume, when
    several do.
    """
    if (ref is None) == (name is None):
        raise UsageError("name a snapshot by id (or unique id prefix), or with --name")
    if ref is not None:
        found = resolve_all(rt, [ref])[0]
        if volume is not None and found.source != volume:
            raise NotFound(
                f"snapshot {found.id} is of volume {quoted(found.source)}, not {quoted(volume)}"
            )
        return found
    assert name is not None
    Meta(name).check_input()  # a name no snapshot can have is a mistake, not "not found"
    matches = [s for s in list_snapshots(rt, volume) if s.name == name]
    if prefer is not None and volume is None:
        matches = [s for s in matches if s.source == prefer] or matches
    where = f" of volume {quoted(volume)}" if volume is not None else ""
    return _one(
        matches,
        name,
        f"no snapshot named {quoted(name)}{where}",
        what="snapshot name",
        hint="; choose one with --volume VOLUME or by id",
    )


def project_volumes(rt: Runtime, project: str) -> list[str]:
    """The volumes of Compose project `project`, by the label Compose gives them."""
    found = sorted(v.name for v in rt.engine.volumes([f"com.docker.compose.project={project}"]))
    if not found:
        raise NotFound(f"no volumes of Compose project {quoted(project)}")
    return found


def resolve_group(rt: Runtime, name: str, project: str) -> list[Snapshot]:
    """The snapshot named `name` of each volume of Compose project `project`, with metadata.

    All or nothing: a volume of the project without such a snapshot is an error,
    not a volume silently left out of the restore.
    """
    Meta(name).check_input()
    volumes = project_volumes(rt, project)
    named = {s.source: s for s in list_snapshots(rt) if s.name == name and s.source in volumes}
    if not named:
        raise NotFound(
            f"no snapshot named {quoted(name)} of any volume of Compose project {quoted(project)}"
        )
    missing = [v for v in volumes if v not in named]
    if missing:
        raise NotFound(
            f"no snapshot named {quoted(name)} of {', '.join(missing)} "
            f"(Compose project {quoted(project)}); "
            "nothing was restored: restore the others one by one (restore --name NAME --to VOLUME)"
        )
    return [named[v] for v in volumes]


def resolve_all(rt: Runtime, refs: Iterable[str]) -> list[Snapshot]:
    """The snapshots `refs` select (ids, id prefixes, volume names), each once, with metadata.

    One listing and one metadata read, however many references.
    """
    snapshots = find(rt)
    chosen: dict[str, Snapshot] = {}
    for ref in refs:
        key = ref.removeprefix(SNAPSHOT_VOLUME_PREFIX).lower()
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise UsageError(
                f"{quoted(ref)} is not a snapshot id or id prefix (for a name, use --name)"
            )
        if len(key) < MIN_PREFIX:
            raise UsageError(
                f"snapshot id prefix {quoted(ref)} is too short: give at least {MIN_PREFIX} digits"
            )
        s = _one(
            [s for s in snapshots if s.id.startswith(key)],
            ref,
            f"no snapshot with id {quoted(ref)}",
        )
        chosen.setdefault(s.id, s)
    return completed(rt, list(chosen.values()))


def _one(
    matches: list[Snapshot], ref: str, none: str, what: str = "snapshot reference", hint: str = ""
) -> Snapshot:
    if not matches:
        raise NotFound(none)
    if len(matches) > 1:
        raise AmbiguousReference(
            ref,
            [f"{s.id} (volume {s.source}, {s.created:%Y-%m-%d %H:%M})" for s in matches],
            what,
            hint,
        )
    return matches[0]


def delete(rt: Runtime, snapshot: Snapshot, force: bool = False, wait: float | None = None) -> None:
    """Remove a snapshot volume (and its keeper) under its lock; a pinned one only with `force`."""
    op = new_id()
    with volume_lock(rt, snapshot.volume, op, "delete", wait):
        current = with_metadata(rt, [snapshot])[0]
        if current.pinned and not force:
            raise PreconditionFailed(
                f"snapshot {snapshot.id} is pinned; unpin it or delete with --force"
            )
        remove(rt, snapshot, op)


def remove(rt: Runtime, snapshot: Snapshot, op: str) -> None:
    """Remove a snapshot, whatever its format, under its lock (the caller's): its volume and
    keeper (format 1), or its directory, and the store with its keeper if that was its
    last (format 2). Busy if a container other than voltool's uses its volume."""
    try:
        if snapshot.in_store:
            require(rt, snapshot)  # mounting a store removed meanwhile would make an empty one
            format2.delete_dir(rt, snapshot.volume, snapshot.id, op)
            format2.remove_if_empty(rt, snapshot.volume, op)
        else:
            remove_snapshot_volume(rt, snapshot.volume)
    except NameConflict:
        raise Busy(f"snapshot {snapshot.id} is in use by a container") from None


def require(rt: Runtime, snapshot: Snapshot) -> None:
    """Raise NotFound unless `snapshot`'s volume still exists and is still that snapshot's
    (or, format 2, still the store of its source).

    Call it under the snapshot's lock, before mounting the volume: mounting a
    volume that was deleted meanwhile would make the engine create an empty one.
    """
    try:
        labels = rt.engine.volume(snapshot.volume).labels
    except NotFound:
        labels = {}
    if snapshot.in_store:
        ours = labels.get(L.ROLE) == L.ROLE_STORE and labels.get(L.SOURCE) == snapshot.source
    else:
        ours = labels.get(L.SNAPSHOT_ID) == snapshot.id
    if not ours:
        raise NotFound(f"snapshot {snapshot.id} was deleted")


def format_1_only(snapshot: Snapshot, command: str) -> None:
    """Refuse a format-2 snapshot in a command that cannot read that format yet."""
    if snapshot.in_store:
        raise UsageError(
            f"snapshot {snapshot.id} is in a store (format 2): {command} cannot read "
            "that format yet"
        )


def read_file(rt: Runtime, volume: str, path: str, limit: int) -> Iterator[bytes]:
    """Stream one file of a snapshot volume (`path` relative to its root), at most `limit` bytes."""
    from voltool.tar.stream import EntryType, TarReader

    with (
        rt.engine.helper(
            rt.image, [Mount(volume, "/snap", read_only=True)], rt.helper_labels(new_id())
        ) as cid,
        contextlib.closing(rt.engine.get_archive(cid, f"/snap/{path}")) as stream,
    ):
        reader = TarReader(stream)
        for entry in reader:
            if entry.type is not EntryType.FILE or entry.size > limit:
                raise IntegrityError(
                    f"{path} in {volume} is not a regular file of at most {limit} bytes"
                )
            yield from reader.content()


def user_volume(rt: Runtime, name: str) -> VolumeInfo:
    """The named volume, which must exist and must not be one of voltool's snapshot volumes."""
    check_volume_name(name)
    try:
        info = rt.engine.volume(name)
    except NotFound:
        raise no_such_volume(rt, name) from None
    if info.labels.get(L.MANAGED) == "true" or name.startswith(SNAPSHOT_VOLUME_PREFIX):
        raise UsageError(f"{quoted(name)} is a voltool snapshot volume, not a volume to work on")
    return info


def no_such_volume(rt: Runtime, name: str, hint: str = "") -> NotFound:
    """The error for a volume a user named that does not exist, with the closest existing name.

    Suggestions come from the engine's volumes that are not voltool's own.
    """
    import difflib

    try:
        names = [
            v.name
            for v in rt.engine.volumes()
            if v.labels.get(L.MANAGED) != "true" and not v.name.startswith(SNAPSHOT_VOLUME_PREFIX)
        ]
    except VoltoolError:  # the suggestion is a courtesy: never let it hide the real error
        names = []
    close = difflib.get_close_matches(name, names, n=1)
    suggestion = f"; did you mean {quoted(close[0])}?" if close else ""
    return NotFound(f"no volume named {quoted(name)}{hint}{suggestion}")


def abandon(rt: Runtime, op: str, sids: dict[str, str | None]) -> bool:
    """Best effort after a failure: remove the op's helpers and uncommitted snapshots
    (`sids`: id -> the store it is in, or None for a snapshot volume of its own).

    Never raises (the original error is what the user must see). Returns False
    if something stays, so that the operation stays pending for `voltool recover`.
    """
    try:
        failures = rt.engine.remove_helpers_of(op)
        for sid, in_store in sids.items():
            try:
                if in_store is None:
                    remove_snapshot_volume(rt, snapshot_volume_name(sid))
                elif _is_store(rt, in_store):  # mounting a missing store would make one
                    format2.delete_dir(rt, in_store, sid, op)
                    format2.remove_if_empty(rt, in_store, op)
            except VoltoolError as e:
                failures.append(str(e))
    except VoltoolError as e:
        failures = [str(e)]
    for f in failures:
        rt.reporter.warn(f"could not clean up ({f}); `voltool recover` will")
    return not failures


def _is_store(rt: Runtime, volume: str) -> bool:
    """Whether `volume` is there and one of voltool's stores: a volume that was in the way
    of one (format2.ensure_store refused it) is not ours to clean up, let alone remove."""
    try:
        labels = rt.engine.volume(volume).labels
    except NotFound:
        return False
    source = labels.get(L.SOURCE, "")
    return labels.get(L.ROLE) == L.ROLE_STORE and format2.store_name(source) == volume


def check_name_free(rt: Runtime, volumes: list[str], name: str) -> None:
    for s in list_snapshots(rt):
        if s.source in volumes and s.name == name:
            raise UsageError(
                f"volume {quoted(s.source)} already has a snapshot named {quoted(name)} ({s.id})"
            )


def read_manifest(rt: Runtime, snapshot: Snapshot, info: SnapshotInfo) -> Manifest:
    """The snapshot's manifest, checked line by line and against snapshot.json."""
    format_1_only(snapshot, "this command")
    chunks = read_file(rt, snapshot.volume, MANIFEST, manifest_bound(info.entries))
    manifest = Manifest.read(chunks, info.entries)
    check_manifest(manifest, info)
    return manifest


def old_is_there(rt: Runtime, volume: str, sid: str) -> bool:
    """Whether the format-1 snapshot volume `volume` of snapshot `sid` still exists."""
    try:
        return rt.engine.volume(volume).labels.get(L.SNAPSHOT_ID) == sid
    except NotFound:
        return False


def stored_copies(rt: Runtime, target: str, sid: str) -> Iterator[Snapshot]:
    """Snapshot `sid`'s directory in the store `target`, if it is there (with metadata)."""
    try:
        rt.engine.volume(target)
    except NotFound:
        return
    source = format2.stores(rt).get(target)
    if source is None:
        return
    for listed in format2.read_stores(rt, {target: source}):
        if listed.id == sid:
            yield from_store(listed)


def remove_copy(rt: Runtime, copy: Snapshot, op: str) -> None:
    """Remove a snapshot's directory from its store (under the store's lock), and the
    store if that leaves it empty and no one mounts it (a listing by anyone mounts
    every store for a moment: an empty store left then is harmless)."""
    require(rt, copy)
    format2.delete_dir(rt, copy.volume, copy.id, op)
    with contextlib.suppress(NameConflict):
        format2.remove_if_empty(rt, copy.volume, op)
