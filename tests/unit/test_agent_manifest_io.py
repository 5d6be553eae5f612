"""The manifest as the agent writes and reads it: spelled exactly as the canonical JSON,
gzip-compressed on request, read back plain or compressed (older stores are plain)."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import pytest

from tests.agenttools import Agent
from voltool.agent.entry import Entry, canonical
from voltool.errors import IntegrityError
from voltool.tar import compression

ENTRIES = [
    Entry(b".", "dir", 0o755, 0, 0, -5, 3, 4, 5, 6, 7),
    Entry(
        b"a/\xff\xfeb",
        "file",
        0o4755,
        1,
        2,
        10**20,
        -(10**19),
        4,
        5,
        6,
        2,
        size=3,
        alloc=4096,
        sha256="a" * 64,
        link=b"x\ny",
        xattrs=((b"user.a", b"\x00\xff"), (b"user.\xff", b"")),
    ),
    Entry(b's"q\\', "symlink", 0o777, 1, 2, 1, 3, 4, 5, 6, 1, target=b"../\xc3\xa9\t"),
    Entry(b"dev", "char", 0o600, 1, 2, 1, 3, 4, 5, 6, 1, rdev=(1, 3)),
    Entry(b"fifo", "fifo", 0o600, 1, 2, 1, 3, 4, 5, 6, 1, xattrs=((b"user.z", b"1"),)),
    Entry(b"f", "file", 0o644, 1, 2, 1, 3, 4, 5, 6, 1, size=0, alloc=0, sha256=None),
    Entry(b"\xe2\x98\x83", "file", 0, 0, 0, 0, 0, 0, 0, 0, 1, size=7, sha256="0" * 64),
]


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: repr(e.path))
def test_lines_are_the_canonical_json(entry: Entry) -> None:
    line, digest_line = entry.lines()
    assert line == canonical(entry.fields()) + b"\n"
    assert digest_line == canonical(entry.digest_fields()) + b"\n"
    assert Entry.parse(line) == entry or entry.sha256 is None


def _tree(src: Path) -> None:
    for i in range(50):
        d = src / f"d{i % 5}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i}").write_bytes(os.urandom(i * 37))
    with open(src / "sparse", "wb") as f:
        f.truncate(1 << 16)
        f.seek(1 << 15)
        f.write(b"in the middle")


def test_gzip_manifest_reads_back_as_the_plain_one(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    time.sleep(1.2)  # ctimes a second old: linked by the incremental copies below
    plain = agent("copy", src, tmp_path / "plain")
    packed = agent("copy", "--gzip", src, tmp_path / "packed")
    assert plain.rc == packed.rc == 0
    assert packed.out[:2] == b"\x1f\x8b"
    assert gzip.decompress(packed.out) == plain.out
    assert packed.summary["digest"] == plain.summary["digest"]
    (tmp_path / "m.jsonl").write_bytes(packed.out)
    (tmp_path / "p.jsonl").write_bytes(plain.out)
    for manifest in ("m.jsonl", "p.jsonl"):
        assert agent("verify", tmp_path / "packed", tmp_path / manifest).rc == 0
        started = str(packed.summary["started_ns"])
        args = ["--prev", tmp_path / "packed", tmp_path / manifest, "--prev-started", started]
        again = agent("copy", "--gzip", src, tmp_path / f"again-{manifest}", *args)
        assert again.rc == 0, again.events
        assert again.summary["files_linked"] == 51
    chunks = [packed.out[i : i + 100] for i in range(0, len(packed.out), 100)]
    assert b"".join(compression.plain_or_gzip(chunks, 1 << 20)) == plain.out
    assert b"".join(compression.plain_or_gzip([plain.out], 1 << 20)) == plain.out


def test_a_cut_gzip_manifest_is_refused(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    packed = agent("copy", "--gzip", src, tmp_path / "packed")
    (tmp_path / "cut.jsonl").write_bytes(packed.out[:-12])
    run = agent("verify", tmp_path / "packed", tmp_path / "cut.jsonl")
    assert run.rc == 3
    assert "cut short" in run.events[-1]["message"]
    with pytest.raises(IntegrityError, match="cut short"):
        b"".join(compression.plain_or_gzip([packed.out[:-12]], 1 << 20))
    with pytest.raises(IntegrityError, match="more than"):
        b"".join(compression.plain_or_gzip([packed.out], 100))


@pytest.mark.parametrize(
    "after", [b"junk", gzip.compress(b"a second member\n", mtime=0)], ids=["junk", "member"]
)
def test_a_gzip_manifest_with_anything_after_its_end_is_refused(after: bytes) -> None:
    """The agent writes one member and nothing after it: data past it would be read by
    one reader and not by another, so it is refused, whichever chunk it arrives in."""
    one = gzip.compress(b"line one\n")
    for chunks in ([one + after], [one, after], [one[:5], one[5:] + after[:2], after[2:]]):
        with pytest.raises(IntegrityError, match="after its end"):
            b"".join(compression.plain_or_gzip(chunks, 1 << 20))
    assert b"".join(compression.plain_or_gzip([one, b""], 1 << 20)) == b"line one\n"


def test_a_stored_manifest_line_without_end_is_refused_as_it_grows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`ls` and `cat` of a stored snapshot stream its manifest: a forged line that never
    ends is refused once it passes the bound, not gathered whole (quadratic, unbounded)."""
    import datetime as dt
    from types import SimpleNamespace

    from voltool.store import catalog, staging
    from voltool.store.catalog import Snapshot
    from voltool.store.layout import SnapshotInfo

    pieces = []

    def read_file(rt: object, volume: str, path: str, limit: int):  # type: ignore[no-untyped-def]
        for _ in range(limit // (1 << 20)):
            pieces.append(1)
            yield b"x" * (1 << 20)

    monkeypatch.setattr(catalog, "read_file", read_file)
    monkeypatch.setattr(staging, "STORED_MAX_LINE", 4 << 20)
    info = SnapshotInfo(2, "a" * 16, "v", "2026-01-01T00:00:00+00:00", "manual", 1000, 0, "0" * 64)
    snap = Snapshot(
        "a" * 16, "voltool-store-v", "v", dt.datetime.now(dt.UTC), "manual", "", info=info
    )
    with pytest.raises(IntegrityError, match="over"):
        list(staging.entries(SimpleNamespace(), snap))  # type: ignore[arg-type]
    assert len(pieces) <= 6  # refused at the bound, not at the end of the 4 GB the limit allows


def test_the_agent_and_voltool_bound_a_stored_manifest_line_alike() -> None:
    """Lines the agent writes (up to its MAX_LINE: large xattrs) are lines voltool reads."""
    from voltool.agent import main as agent_main
    from voltool.store.layout import STORED_MAX_LINE

    assert agent_main.MAX_LINE == STORED_MAX_LINE


def test_a_line_over_the_bound_is_refused_whichever_chunk_it_comes_in() -> None:
    from voltool.store.manifest import split_lines

    for chunks in ([b"short\n" + b"x" * 20 + b"\nend\n"], [b"short\n", b"x" * 20, b"\nend\n"]):
        with pytest.raises(IntegrityError, match="over 10 bytes"):
            list(split_lines(chunks, 10))
    assert list(split_lines([b"short\n", b"end\n"], 10)) == [b"short", b"end"]


def test_small_files_copy_and_hash_as_the_source(agent: Agent, tmp_path: Path) -> None:
    src = tmp_path / "src"
    _tree(src)
    run = agent("copy", src, tmp_path / "dst")
    assert run.rc == 0
    for line in run.lines():
        if line["type"] == "file":
            path = line["path"]
            assert (tmp_path / "dst" / path).read_bytes() == (src / path).read_bytes()
            assert line["size"] == (src / path).stat().st_size
    sparse = os.stat(tmp_path / "dst" / "sparse")
    assert sparse.st_blocks * 512 < sparse.st_size  # holes stay holes
    assert json.loads(run.out.splitlines()[0])["path"] == "."
