"""Format 1 of a snapshot volume, and its two metadata documents.

    data/            the volume's tree, exactly as it was
    manifest.jsonl   one canonical line per entry (voltool.store.manifest)
    meta.json        user-editable: name, note, pinned; its ETag is the SHA-256
                     of its canonical JSON
    snapshot.json    written LAST: the commit marker

Everything read back from a snapshot volume is data to validate: `SnapshotInfo`
and `Meta` parse strictly and raise IntegrityError on anything unexpected.
"""

from __future__ import annotations

import builtins
import datetime as dt
import hashlib
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

from voltool.errors import IntegrityError, UsageError
from voltool.ids import is_valid_id
from voltool.store.manifest import MAX_LINE, Manifest
from voltool.words import quoted

FORMAT = 1
FORMATS = (1, 2)  # 2: a directory of a store (voltool.store.format2)
DATA_DIR = "data"
MANIFEST = "manifest.jsonl"
META = "meta.json"
SNAPSHOT = "snapshot.json"

KINDS = ("manual", "pre-restore", "import", "pulled")

# A restore's working entries at the top of the target volume, named after its
# operation id: staged data, the old data, and the swap's phase marker.
STAGE_PREFIX = ".voltool-stage-"
OLD_PREFIX = ".voltool-old-"
SWAP_MARK_PREFIX = ".voltool-swap-"


@dataclass(frozen=True)
class Names:
    """A restore's working entries at the top of the target volume."""

    stage: str
    old: str
    mark: str

    @classmethod
    def for_op(cls, op: str) -> Names:
        """The names of operation `op`'s entries; refuses anything that is not a valid id
        (an id read back from the engine names paths that get removed)."""
        if not is_valid_id(op):
            raise ValueError(f"not an operation id: {quoted(op)}")
        return cls(STAGE_PREFIX + op, OLD_PREFIX + op, SWAP_MARK_PREFIX + op)


_HEX64 = re.compile(r"^[0-9a-f]{64}$")
MAX_NOTE = 4096
MAX_NAME = 128
# The most bytes of snapshot.json, meta.json or begun.json anyone reads. What voltool
# writes is less (a note of MAX_NOTE characters, JSON-escaped, is at most 48 KiB);
# listing reads every one of a store's, so the bound is what a forged store can cost.
MAX_METADATA_FILE = 64 * 1024
# The longest line of a stored (format-2) manifest: the agent's bound (its MAX_LINE).
STORED_MAX_LINE = 8 * 1024 * 1024
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:+-]{0,127}$")


@dataclass(frozen=True)
class SnapshotInfo:
    """snapshot.json: what the snapshot is, written once it is complete."""

    format: int
    id: str
    source: str
    created: str  # ISO 8601, UTC
    kind: str
    entries: int
    bytes: int
    tree_digest: str
    quiesce: str = "none"
    voltool: str = ""
    # Imports: the id and creation time the snapshot had where it was exported.
    origin_id: str | None = None
    origin_created: str | None = None
    # Format 2: when the agent's copy began (ns since the epoch); the next snapshot of
    # the volume trusts no file changed within a second of it (voltool/agent/copy.py).
    started_ns: int | None = None

    def to_json(self) -> builtins.bytes:
        fields = {k: v for k, v in asdict(self).items() if v is not None}
        return (json.dumps(fields, sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, raw: builtins.bytes, expected_id: str | None = None) -> SnapshotInfo:
        data = _load_object(raw, SNAPSHOT)
        if data.get("format") not in FORMATS:
            raise IntegrityError(f"{SNAPSHOT}: unknown format {quoted(data.get('format'))}")
        known = set(cls.__dataclass_fields__)
        try:
            info = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError:
            raise IntegrityError(f"{SNAPSHOT}: fields are missing") from None
        if not isinstance(info.id, str) or not is_valid_id(info.id):
            raise IntegrityError(f"{SNAPSHOT}: invalid snapshot id {quoted(info.id)}")
        if expected_id is not None and info.id != expected_id:
            raise IntegrityError(f"{SNAPSHOT}: id {info.id} does not match its volume")
        for name in ("entries", "bytes"):
            value = getattr(info, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise IntegrityError(f"{SNAPSHOT}: {name} is not a count")
        if not isinstance(info.tree_digest, str) or not _HEX64.fullmatch(info.tree_digest):
            raise IntegrityError(f"{SNAPSHOT}: tree_digest is not a SHA-256")
        if (
            info.kind not in KINDS
            or not isinstance(info.source, str)
            or len(info.source) > 255
            or not is_time(info.created)
        ):
            raise IntegrityError(f"{SNAPSHOT}: kind, source or created is malformed")
        if not isinstance(info.voltool, str) or len(info.voltool) > 64:
            raise IntegrityError(f"{SNAPSHOT}: voltool is malformed")
        if info.quiesce not in ("pause", "stop", "none"):
            raise IntegrityError(f"{SNAPSHOT}: quiesce is malformed")
        if info.origin_id is not None and not (
            isinstance(info.origin_id, str) and is_valid_id(info.origin_id)
        ):
            raise IntegrityError(f"{SNAPSHOT}: invalid origin id {quoted(info.origin_id)}")
        if info.origin_created is not None and not is_time(info.origin_created):
            raise IntegrityError(f"{SNAPSHOT}: origin_created is malformed")
        if info.started_ns is not None and (
            not isinstance(info.started_ns, int) or isinstance(info.started_ns, bool)
        ):
            raise IntegrityError(f"{SNAPSHOT}: started_ns is malformed")
        return info


_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})", re.ASCII)


def is_time(value: object) -> bool:
    """A time as voltool writes it: ISO 8601, to the second, with an offset."""
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        return False
    try:
        dt.datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return False
    return True


def manifest_bound(entries: int) -> int:
    """The most bytes a manifest of `entries` canonical lines can take."""
    return entries * (MAX_LINE + 1)


def check_manifest(manifest: Manifest, info: SnapshotInfo) -> None:
    """`manifest` is the one `info` describes, and a tree that can be extracted as it is.

    Counts, bytes and digest agree with snapshot.json; there is a root; every
    entry's parent is a directory of the manifest (none lies below a symlink).
    """
    if (
        len(manifest) != info.entries
        or manifest.content_bytes() != info.bytes
        or manifest.digest() != info.tree_digest
    ):
        raise IntegrityError(
            f"snapshot {info.id}: manifest does not match {SNAPSHOT} (entries, bytes or digest)"
        )
    if manifest.root is None or manifest.root.type != "dir":
        raise IntegrityError(f"snapshot {info.id}: manifest has no root directory")
    known_dir = "."  # the last parent found to be a directory: siblings come together
    for e in manifest:
        if e.path == ".":
            continue
        path = e.path.rpartition("/")[0] or "."
        if path == known_dir:
            continue
        parent = manifest.get(path)
        if parent is None or parent.type != "dir":
            raise IntegrityError(f"manifest entry {quoted(e.path)}: its parent is not a directory")
        known_dir = path


@dataclass(frozen=True)
class Meta:
    """meta.json: what a user may change about a snapshot."""

    name: str | None = None
    note: str | None = None
    pinned: bool = False

    def canonical(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.canonical()).hexdigest()

    def to_json(self) -> builtins.bytes:
        return (json.dumps(asdict(self), sort_keys=True, indent=2) + "\n").encode()

    @classmethod
    def parse(cls, raw: bytes) -> Meta:
        data = _load_object(raw, META)
        if set(data) - {"name", "note", "pinned"}:
            raise IntegrityError(f"{META}: unknown fields")
        meta = cls(data.get("name"), data.get("note"), data.get("pinned", False))
        meta.check()
        return meta

    def check(self) -> None:
        """Raise IntegrityError if meta.json as read back holds anything invalid."""
        problem = self.problem()
        if problem:
            raise IntegrityError(f"{META}: {problem}")

    def check_input(self) -> None:
        """Raise UsageError if a name or note given on the command line is invalid."""
        problem = self.problem()
        if problem:
            raise UsageError(problem)

    def problem(self) -> str | None:
        """What is wrong with these values, or None."""
        if self.name is not None and (
            not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name)
        ):
            return (
                f"invalid name {quoted(self.name)}: up to {MAX_NAME} letters, digits and _.@:+-, "
                "starting with a letter or digit"
            )
        if self.note is not None and (not isinstance(self.note, str) or len(self.note) > MAX_NOTE):
            return f"note is not text of at most {MAX_NOTE} characters"
        if not isinstance(self.pinned, bool):
            return "pinned is not true or false"
        return None


def _load_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise IntegrityError(f"{what} is not valid JSON") from None
    if not isinstance(data, dict):
        raise IntegrityError(f"{what} is not a JSON object")
    return data
