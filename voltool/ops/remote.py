"""Copies off the machine: voltool's snapshots in restic repositories, as restic lists
them, and what is done to a repository as a whole (init, prune, check, unlock).

A pushed snapshot (voltool.ops.push) is one restic snapshot of its directory in
the store:

    data/            the tree, as stored (restic keeps modes, owners, times,
                     xattrs, hard links, devices and FIFOs)
    manifest.jsonl   the agent's manifest
    meta.json        name, note, pin
    snapshot.json    what the snapshot is, with its tree digest

tagged `voltool` and `voltool.id=<id>`, `voltool.volume=`, `voltool.kind=`,
`voltool.created=`, `voltool.digest=` (the tree digest), `voltool.bytes=`,
`voltool.entries=`, `voltool.engine=` (the id of the engine it came from),
`voltool.pushed=` (when its push began), and `voltool.name=` and
`voltool.pinned` where they apply, with restic's time set to the snapshot's
creation. A restic snapshot still tagged `voltool.pending` is a push that was
not confirmed: never listed as a copy. Tags are read back as data: one that
does not read as voltool's well-formed set leaves its snapshot out.

restic runs next to the data, in helpers of the agent image
(voltool.engine.restic): nothing crosses voltool but restic's listings.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

from voltool.engine import agent_image, restic
from voltool.engine.client import Mount
from voltool.errors import (
    AmbiguousReference,
    IntegrityError,
    NotFound,
    PreconditionFailed,
    UsageError,
)
from voltool.ids import check_volume_name, is_valid_id, new_id
from voltool.remotes import Remote, redact, secrets
from voltool.runtime import Runtime
from voltool.store import catalog, format2
from voltool.store.catalog import MIN_PREFIX, Snapshot
from voltool.store.layout import (
    DATA_DIR,
    KINDS,
    MANIFEST,
    META,
    NAME_PATTERN,
    SNAPSHOT,
    Meta,
    SnapshotInfo,
    is_time,
)
from voltool.words import quoted

TAG = "voltool"
PENDING = "voltool.pending"  # until a push is confirmed (voltool.ops.push)
HOST = "voltool"  # restic's hostname for every pushed snapshot
PUSHED = (DATA_DIR, MANIFEST, META, SNAPSHOT)  # what a push takes of a snapshot's directory
_HEX64 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RemoteSnapshot:
    """A voltool snapshot in a restic repository, as its tags describe it."""

    restic_id: str
    id: str
    source: str
    created: dt.datetime
    kind: str
    digest: str
    bytes: int
    entries: int
    engine: str
    name: str | None
    pinned: bool
    pending: bool = False  # tagged voltool.pending: a push that did not finish; never used
    pushed: dt.datetime | None = None  # when its push began (voltool.pushed)

    def as_snapshot(self, remote: str) -> Snapshot:
        """As a local snapshot record: what prune plans with and renders."""
        info = SnapshotInfo(
            format=format2.FORMAT,
            id=self.id,
            source=self.source,
            created=self.created.isoformat(),
            kind=self.kind,
            entries=self.entries,
            bytes=self.bytes,
            tree_digest=self.digest,
        )
        meta = Meta(self.name, None, self.pinned)
        return Snapshot(
            self.id, f"remote:{remote}", self.source, self.created, self.kind, "", True, info, meta
        )


def tags(info: SnapshotInfo, meta: Meta, engine_id: str) -> list[str]:
    """The restic tags of a pushed snapshot (none holds a comma: restic splits on them)."""
    found = [
        TAG,
        f"voltool.id={info.id}",
        f"voltool.volume={info.source}",
        f"voltool.kind={info.kind}",
        f"voltool.created={info.created}",
        f"voltool.digest={info.tree_digest}",
        f"voltool.bytes={info.bytes}",
        f"voltool.entries={info.entries}",
    ]
    if engine_id and "," not in engine_id:
        found.append(f"voltool.engine={engine_id}")
    if meta.name:
        found.append(f"voltool.name={meta.name}")
    if meta.pinned:
        found.append("voltool.pinned")
    return found


def parse(raw: object) -> RemoteSnapshot | None:
    """One entry of `restic snapshots --json`, if it is a well-formed voltool snapshot."""
    if not isinstance(raw, dict):
        return None
    rid, tag_list = raw.get("id"), raw.get("tags")
    if not isinstance(rid, str) or not isinstance(tag_list, list) or TAG not in tag_list:
        return None
    values: dict[str, str] = {}
    for t in tag_list:
        if isinstance(t, str) and t.startswith("voltool.") and "=" in t:
            key, _, value = t.removeprefix("voltool.").partition("=")
            values.setdefault(key, value)
    try:
        if not is_time(values["created"]):
            return None
        created = dt.datetime.fromisoformat(values["created"]).astimezone(dt.UTC)
        snapshot = RemoteSnapshot(
            restic_id=rid,
            id=values["id"],
            source=values["volume"],
            created=created,
            kind=values["kind"],
            digest=values["digest"],
            bytes=int(values["bytes"]),
            entries=int(values["entries"]),
            engine=values.get("engine", ""),
            name=values.get("name"),
            pinned="voltool.pinned" in tag_list,
            pending=PENDING in tag_list,
            pushed=(
                dt.datetime.fromisoformat(values["pushed"]).astimezone(dt.UTC)
                if is_time(values.get("pushed"))
                else None
            ),
        )
    except (KeyError, ValueError, OverflowError):
        return None
    if (
        not is_valid_id(snapshot.id)
        or not _HEX64.fullmatch(snapshot.digest)
        or not NAME_PATTERN.fullmatch(snapshot.source)
        or snapshot.kind not in KINDS
        or min(snapshot.bytes, snapshot.entries) < 0
        or (snapshot.name is not None and not NAME_PATTERN.fullmatch(snapshot.name))
    ):
        return None
    return snapshot


@dataclass
class Session:
    """One command's view of a remote: its repository (with secrets) and the image."""

    rt: Runtime
    remote: Remote
    repo: restic.Repository
    image: str
    op: str

    @classmethod
    def open(cls, rt: Runtime, remote: Remote, op: str | None = None) -> Session:
        image = agent_image.agent_image(rt)
        restic.restic_version(rt, image)
        repo = restic.Repository(remote, secrets(remote))
        return cls(rt, remote, repo, image, op or new_id())

    def run(
        self,
        args: list[str],
        what: str,
        mounts: list[Mount] | None = None,
        read_only: bool = False,
    ) -> bytes:
        result = restic.run(
            self.rt, self.image, self.repo, self.op, args, mounts=mounts, read_only=read_only
        )
        return restic.checked(result, self.repo, what).stdout

    def listing(self, volume: str | None = None) -> list[RemoteSnapshot]:
        """Every voltool snapshot of the repository (`volume`'s), oldest first, pending
        ones included (callers leave them out: `complete`)."""
        # One --tag with a comma: snapshots with both tags (two --tag options would be either).
        wanted = TAG if volume is None else f"{TAG},voltool.volume={volume}"
        args = ["snapshots", "--json", "--tag", wanted]
        out = self.run(args, f"listing remote {self.remote.name}", read_only=True)
        raw = restic.json_value(out, "listing")
        found = [s for s in (parse(r) for r in (raw if isinstance(raw, list) else [])) if s]
        return sorted(found, key=lambda s: (s.created, s.id))


def complete(listing: list[RemoteSnapshot]) -> list[RemoteSnapshot]:
    return [s for s in listing if not s.pending]


def init(rt: Runtime, remote: Remote) -> None:
    """Create the restic repository of `remote`; PreconditionFailed if there is one already."""
    s = Session.open(rt, remote)
    result = restic.run(rt, s.image, s.repo, s.op, ["init"])
    if result.exit_code != 0:
        text = result.stderr.decode(errors="replace")
        if "already" in text and ("exists" in text or "initialized" in text):
            raise PreconditionFailed(f"remote {quoted(remote.name)} has a repository already")
        raise restic.failure(result, s.repo, f"initialising remote {remote.name}")


def snapshots(rt: Runtime, remote: Remote, volume: str | None = None) -> list[RemoteSnapshot]:
    """The voltool snapshots in `remote`'s repository, oldest first (whole ones only)."""
    if volume is not None:
        check_volume_name(volume)
    return complete(Session.open(rt, remote).listing(volume))


def find(listing: list[RemoteSnapshot], ref: str, remote: str) -> RemoteSnapshot:
    """The one snapshot of `listing` whose voltool id is or starts with `ref`."""
    key = ref.lower()
    if not key or any(c not in "0123456789abcdef" for c in key):
        raise UsageError(f"{quoted(ref)} is not a snapshot id or id prefix")
    if len(key) < MIN_PREFIX:
        raise UsageError(
            f"snapshot id prefix {quoted(ref)} is too short: give at least {MIN_PREFIX} digits"
        )
    matches = {s.id: s for s in listing if s.id.startswith(key)}
    if not matches:
        raise NotFound(f"remote {quoted(remote)} has no snapshot {quoted(ref)}")
    if len(matches) > 1:
        shown = [
            f"{m.id} (volume {m.source}, {m.created:%Y-%m-%d %H:%M})"
            for m in sorted(matches.values(), key=lambda m: m.id)
        ]
        raise AmbiguousReference(ref, shown)
    return next(iter(matches.values()))


@dataclass(frozen=True)
class PruneView:
    """What `prune --remote` plans with: this engine's whole snapshots on the remote, as local
    records (with the pin and name they have here, where they are here too), and what this
    engine's pushes cut short left (pending, their push begun over an hour ago)."""

    snapshots: list[Snapshot]
    by_id: dict[str, list[RemoteSnapshot]]  # voltool id -> its restic snapshots
    leftovers: list[RemoteSnapshot]


LEFTOVER_AFTER = dt.timedelta(hours=1)


def prune_view(rt: Runtime, remote: Remote, now: dt.datetime) -> PruneView:
    engine_id = rt.engine.identity()
    listing = Session.open(rt, remote).listing()
    here = {s.id: s for s in catalog.list_snapshots(rt) if s.state == "complete"}
    by_id: dict[str, list[RemoteSnapshot]] = {}
    records: dict[str, Snapshot] = {}
    for r in complete(listing):
        if r.engine != engine_id:
            continue  # another machine's: its own prune decides
        by_id.setdefault(r.id, []).append(r)
        record = r.as_snapshot(remote.name)
        local = here.get(r.id)
        if local is not None:  # pinned or named here since it was pushed: that counts
            record = replace(record, meta=Meta(local.name, None, local.pinned or r.pinned))
        records.setdefault(r.id, record)
    return PruneView(list(records.values()), by_id, leftovers(listing, engine_id, now))


def leftovers(
    listing: list[RemoteSnapshot], engine_id: str, now: dt.datetime
) -> list[RemoteSnapshot]:
    """What this engine's pushes cut short left: pending, their push begun over an hour ago
    (a push in progress is pending until its end; another engine's is its own business)."""
    return [
        r
        for r in listing
        if r.pending
        and r.engine == engine_id
        and r.pushed is not None
        and now - r.pushed > LEFTOVER_AFTER
    ]


@dataclass(frozen=True)
class Forgotten:
    removed: tuple[str, ...]  # voltool ids
    leftovers: int  # pending restic snapshots removed


def forget(rt: Runtime, remote: Remote, view: PruneView, doomed: list[str]) -> Forgotten:
    """Remove the voltool snapshots `doomed` (every restic snapshot of each) and the view's
    leftovers from the repository (restic forget), then the data only they used (restic
    prune)."""
    restic_ids = [r.restic_id for sid in doomed for r in view.by_id.get(sid, [])]
    restic_ids += [r.restic_id for r in view.leftovers]
    if not restic_ids:
        return Forgotten((), 0)
    s = Session.open(rt, remote)
    s.run(["forget", *restic_ids], f"forgetting on remote {remote.name}")
    s.run(["prune"], f"pruning remote {remote.name}")
    return Forgotten(tuple(doomed), len(view.leftovers))


def unlock(rt: Runtime, remote: Remote) -> None:
    """Remove every lock of the repository (restic unlock --remove-all)."""
    Session.open(rt, remote).run(["unlock", "--remove-all"], f"unlocking remote {remote.name}")


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    said: str  # restic's last words: what it found wrong, or that all is well


def check(rt: Runtime, remote: Remote, subset: str | None = None) -> CheckResult:
    """restic's check of the repository (and, with `subset`, of that part of its data:
    `--read-data-subset`, as 10% or 1/5). RemoteError if it cannot be opened."""
    s = Session.open(rt, remote)
    args = ["check"] + (["--read-data-subset", subset] if subset else [])
    result = restic.run(rt, s.image, s.repo, s.op, args)
    if result.exit_code == 0:
        return CheckResult(True, "no errors were found")
    error = restic.failure(result, s.repo, f"checking remote {remote.name}")
    if not isinstance(error, IntegrityError):
        raise error
    text = redact((result.stdout + b"\n" + result.stderr).decode(errors="replace"), s.repo.secrets)
    lines = [ln.strip() for ln in text.splitlines()]
    found = [ln for ln in lines if ln.lower().startswith(("error", "pack"))]
    return CheckResult(False, (found[0] if found else restic.said(result, s.repo))[:400])


def as_json(s: RemoteSnapshot) -> dict[str, object]:
    return {
        "id": s.id,
        "volume": s.source,
        "created": s.created.isoformat(),
        "kind": s.kind,
        "name": s.name,
        "pinned": s.pinned,
        "bytes": s.bytes,
        "entries": s.entries,
        "tree_digest": s.digest,
        "engine": s.engine,
        "restic_id": s.restic_id[:8],  # restic's short id, as its own commands show it
    }
