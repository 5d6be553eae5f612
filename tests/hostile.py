"""Archives to import, honest and hostile, built in memory (no engine needed).

`make_export` writes an export as voltool does, from tar members, and can be
told to lie: a snapshot.json field, a manifest built from other members, the
metadata members in another order. `CORPUS` is every rule an import enforces,
each case with the message fragment and exit code it must fail with.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field

from tests.tarbuild import M, d, f, hard, make_tar, special, sym
from voltool.errors import ExitCode
from voltool.store.layout import MANIFEST, MAX_METADATA_FILE, META, SNAPSHOT, SnapshotInfo
from voltool.store.manifest import Manifest
from voltool.tar.compression import Compression, writer
from voltool.tar.stream import file_member
from voltool.tar.transfer import Transfer
from voltool.tar.validate import EntryValidator, Limits

TREE = [
    d("./", mode=0o750, uid=7, gid=8),
    f("./a.txt", b"alpha\n"),
    d("./dir"),
    f("./dir/b.bin", bytes(range(256)) * 40, mode=0o600, uid=33, gid=33),
    sym("./link", "a.txt"),
    hard("./hard", "./a.txt"),
    f("./empty", b""),
]


def tree_data(members: list[M]) -> tuple[Manifest, bytes]:
    """The manifest of a tree given as tar members, and its data as an export carries it."""
    t = Transfer([make_tar(members)], EntryValidator(None, Limits(allow_special=True)), "data")
    data = b"".join(t)
    return t.manifest, data


def make_export(
    members: list[M] = TREE,
    *,
    manifest_of: list[M] | None = None,
    info: dict[str, object] | None = None,
    meta: bytes = b'{"name": null, "note": "from elsewhere", "pinned": false}\n',
    order: tuple[str, ...] = (SNAPSHOT, MANIFEST, META),
    replace: dict[str, bytes] | None = None,
) -> bytes:
    """An export of `members`; the keyword arguments make it lie."""
    manifest, data = tree_data(members)
    if manifest_of is not None:
        manifest = tree_data(manifest_of)[0]
    fields = json.loads(
        SnapshotInfo(
            format=1,
            id="0123456789abcdef",
            source="pgdata",
            created="2026-11-01T10:00:00+00:00",
            kind="manual",
            entries=len(manifest),
            bytes=manifest.content_bytes(),
            tree_digest=manifest.digest(),
        ).to_json()
    )
    fields.update(info or {})
    content = {
        SNAPSHOT: json.dumps(fields).encode(),
        MANIFEST: b"".join(manifest.lines()),
        META: meta,
        **(replace or {}),
    }
    head = b"".join(b"".join(file_member(n, [content[n]], 1_700_000_000)) for n in order)
    return head + data


def compress(raw: bytes, kind: Compression) -> bytes:
    buf = io.BytesIO()
    with writer(buf, kind) as w:
        w.write(raw)
    return buf.getvalue()


def _corrupt_checksum(raw: bytes) -> bytes:
    """Break the first header's checksum."""
    b = bytearray(raw)
    b[148:156] = b"0000000\0"
    return bytes(b)


def _pax_member(records: dict[str, bytes], kind: bytes = tarfile.REGTYPE) -> bytes:
    """A member whose PAX header carries raw records (tarfile would refuse some of them)."""
    body = b""
    for k, v in records.items():
        rec = b" " + k.encode() + b"=" + v + b"\n"
        n = len(rec) + 1
        while len(str(n).encode() + rec) != n:
            n += 1
        body += str(n).encode() + rec
    pax = tarfile.TarInfo("PaxHeader")
    pax.type = tarfile.XHDTYPE
    pax.size = len(body)
    out = pax.tobuf(tarfile.USTAR_FORMAT) + body + b"\0" * (-len(body) % 512)
    entry = tarfile.TarInfo("placeholder")
    entry.type = kind
    return out + entry.tobuf(tarfile.USTAR_FORMAT)


def _long_path_manifest() -> bytes:
    line = json.dumps(
        {"gid": 0, "mode": 493, "mtime": 0, "path": "p" * 60_000, "type": "dir", "uid": 0},
        sort_keys=True,
        separators=(",", ":"),
    )
    return line.encode() + b"\n"


def _plain_header(name: str) -> bytes:
    info = tarfile.TarInfo(name)
    return info.tobuf(tarfile.USTAR_FORMAT)


def _with_end(*parts: bytes) -> bytes:
    return b"".join(parts) + b"\0" * 1024


def _truncated() -> bytes:
    whole = make_tar([d("./"), f("./big", b"z" * 100_000)])
    return whole[: len(whole) // 2]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], bytes]
    message: str  # a fragment of the one-line error
    code: ExitCode = ExitCode.INTEGRITY
    args: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)


ROOT = d("./")
CORPUS = [
    Case("absolute-path", lambda: make_tar([ROOT, f("/etc/evil")]), "absolute path"),
    Case("dot-dot", lambda: make_tar([ROOT, f("./a/../../evil")]), "'..' in a name"),
    Case(
        "nul-in-name",
        lambda: _with_end(root_header(), _pax_member({"path": b"./a\0b"})),
        "NUL byte in a name",
    ),
    Case(
        "through-symlink",
        lambda: make_tar([ROOT, sym("./l", "/etc"), f("./l/passwd")]),
        "written through the symlink 'l'",
    ),
    Case(
        "hard-link-outside",
        lambda: make_tar([ROOT, hard("./h", "/etc/shadow")]),
        "absolute path",
    ),
    Case(
        "hard-link-unseen",
        lambda: make_tar([ROOT, hard("./h", "./later"), f("./later")]),
        "not an earlier file",
    ),
    Case(
        "device",
        lambda: make_tar([ROOT, special("./null", tarfile.CHRTYPE)]),
        "char entries are not allowed",
    ),
    Case(
        "fifo",
        lambda: make_tar([ROOT, special("./pipe", tarfile.FIFOTYPE)]),
        "fifo entries are not allowed",
    ),
    Case(
        # tar has no type for sockets (GNU tar leaves them out): any unknown type is refused.
        "unknown-type",
        lambda: make_tar([ROOT, special("./sock", b"Z")]),
        "unsupported tar member type",
    ),
    Case(
        "duplicate-changes-type",
        lambda: make_tar([ROOT, f("./x"), d("./x")]),
        "duplicate entry",
    ),
    Case("name-part-too-long", lambda: make_tar([ROOT, f("./" + "n" * 300)]), "longer than 255"),
    Case(
        "path-too-long",
        lambda: make_tar([ROOT, f("./" + "/".join(["p" * 200] * 21))]),
        "name longer than 4032 bytes",
    ),
    Case(
        "too-many-entries",
        lambda: make_tar([ROOT, *[f(f"./f{i}") for i in range(10)]]),
        "more than 5 entries",
        args=("--max-entries", "5"),
        limits=Limits(max_entries=5),
    ),
    Case(
        "too-many-bytes",
        lambda: make_tar([ROOT, f("./big", b"b" * 4096)]),
        "more than 1024 bytes",
        args=("--max-bytes", "1K"),
        limits=Limits(max_bytes=1024),
    ),
    Case("truncated", _truncated, "truncated"),
    Case(
        "bad-checksum",
        lambda: _corrupt_checksum(make_tar([ROOT, f("./a")])),
        "archive is corrupt",
    ),
    Case(
        "garbage-after-end",
        lambda: make_tar([ROOT, f("./a")]) + b"garbage" * 100,
        "data after its end-of-archive marker",
    ),
    Case("empty", lambda: b"", "archive is empty"),
    Case(
        # GNU tar and Go keep only the last of two; voltool refuses to pick.
        "two-pax-headers",
        lambda: _with_end(
            root_header(),
            _pax_member({"path": b"evil/a"})[:-512],
            _pax_member({"comment": b"hi"})[:-512],
            _plain_header("benign"),
        ),
        "two PAX headers for one entry",
    ),
    Case(
        "uid-over-32-bits",
        lambda: _with_end(root_header(), _pax_member({"uid": str(2**32).encode()})),
        "uid 4294967296 is over",
    ),
    Case(
        "symlink-climbs-out",
        lambda: make_tar([ROOT, d("./lib"), sym("./lib/l", "../../../etc/shadow")]),
        "climbs above the volume's root",
    ),
    Case(
        "export-nested-json",
        lambda: make_export(replace={SNAPSHOT: b"[" * 50_000}),
        "snapshot.json is not valid JSON",
    ),
    Case(
        "export-manifest-blank-lines",
        lambda: make_export(replace={MANIFEST: b"\n" * 5000}, info={"entries": 100_000}),
        "manifest line is not JSON",
    ),
    # Exports whose metadata lies.
    Case(
        "export-entry-count-lies",
        lambda: make_export(info={"entries": len(TREE) + 1}),
        "manifest does not match snapshot.json",
    ),
    Case(
        "export-byte-count-lies",
        lambda: make_export(info={"bytes": 1}),
        "manifest does not match snapshot.json",
    ),
    Case(
        "export-digest-lies",
        lambda: make_export(info={"tree_digest": "0" * 64}),
        "manifest does not match snapshot.json",
    ),
    Case(
        "export-hash-lies",
        lambda: make_export(manifest_of=[*TREE[:1], f("./a.txt", b"ALPHA\n"), *TREE[2:]]),
        "'a.txt' does not match its manifest (content differs)",
    ),
    Case(
        "export-size-lies",
        lambda: make_export(manifest_of=[*TREE[:1], f("./a.txt", b"alpha, longer\n"), *TREE[2:]]),
        "'a.txt' does not match its manifest (size differs)",
    ),
    Case(
        "export-extra-entry",
        lambda: make_export([*TREE, f("./smuggled")], manifest_of=TREE),
        "'smuggled', which its manifest does not list",
    ),
    Case(
        "export-missing-entry",
        lambda: make_export(TREE[:-1], manifest_of=TREE),
        "lacks 1 entry",
    ),
    Case("export-unknown-format", lambda: make_export(info={"format": 2}), "unknown format 2"),
    Case(
        "export-bad-id",
        lambda: make_export(info={"id": "../../../etc"}),
        "invalid snapshot id '../../../etc'",
    ),
    Case(
        "export-bad-source",
        lambda: make_export(info={"source": "../etc"}),
        "source '../etc' is not a volume name",
    ),
    Case(
        "export-source-with-a-newline",
        lambda: make_export(info={"source": "pgdata\n"}),
        "is not a volume name",
    ),
    Case(
        "export-id-with-a-newline",
        lambda: make_export(info={"id": "0123456789abcdef\n"}),
        "invalid snapshot id",
    ),
    Case(
        "export-created-not-a-time",
        lambda: make_export(info={"created": "yesterday, about noon"}),
        "kind, source or created is malformed",
    ),
    Case(
        "export-manifest-path-too-long",
        lambda: make_export(replace={MANIFEST: _long_path_manifest()}, info={"entries": 1}),
        "path is not normalised",
    ),
    Case(
        "pax-header-of-many-records",
        lambda: _with_end(root_header(), _pax_member({f"k{i}": b"v" for i in range(300)})),
        "more than 64 records",
    ),
    Case(
        "export-members-out-of-order",
        lambda: make_export(order=(SNAPSHOT, META, MANIFEST)),
        "expected manifest.jsonl next, found 'meta.json'",
    ),
    Case(
        "export-oversized-metadata",
        lambda: make_export(replace={META: b" " * (MAX_METADATA_FILE + 1)}),
        f"not a regular file of at most {MAX_METADATA_FILE} bytes",
    ),
    Case(
        "export-bad-meta",
        lambda: make_export(meta=b'{"pinned": "yes"}'),
        "pinned is not true or false",
    ),
    Case(
        "export-over-the-entry-cap",
        lambda: make_export(),
        "it lists 7 entries, over 3",
        args=("--max-entries", "3"),
        limits=Limits(max_entries=3),
    ),
    Case(
        "export-over-the-byte-cap",
        lambda: make_export(),
        "over 1024",
        args=("--max-bytes", "1K"),
        limits=Limits(max_bytes=1024),
    ),
]

COMPRESSIONS = [Compression.NONE, Compression.GZIP, Compression.ZSTD]


def gzip_bomb(size: int) -> bytes:
    """A gzip stream of a tar holding one file of `size` zero bytes (tiny compressed)."""
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as g:
        header = tarfile.TarInfo("./zeros")
        header.size = size
        g.write(root_header())
        g.write(header.tobuf(tarfile.PAX_FORMAT))
        chunk = b"\0" * (1 << 20)
        for _ in range(size // len(chunk)):
            g.write(chunk)
        g.write(b"\0" * 1024)
    return buf.getvalue()


def root_header() -> bytes:
    root = tarfile.TarInfo("./")
    root.type = tarfile.DIRTYPE
    root.mode = 0o755
    return root.tobuf(tarfile.PAX_FORMAT)
