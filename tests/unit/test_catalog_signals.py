from __future__ import annotations

import os
import signal
from typing import Any

import pytest

from voltool.errors import EngineError
from voltool.signals import deferred_interrupts
from voltool.store.catalog import _parse_framed
from voltool.store.layout import MAX_METADATA_FILE

A, B = "a" * 16, "b" * 16
GOOD = f"BEGIN\n{A}/snapshot.json 7b7d\n{A}/meta.json !\n{B}/meta.json 7b7d\nEND\n".encode()


def test_reader_output_is_parsed_by_id_and_file() -> None:
    got = _parse_framed(GOOD, {A, B})
    assert got == {A: {"snapshot.json": b"{}", "meta.json": None}, B: {"meta.json": b"{}"}}


def test_od_spacing_empty_files_and_oversized_files() -> None:
    big = " 20" * (MAX_METADATA_FILE + 1)  # one byte over the bound: read as "there, but bad"
    out = f"BEGIN\n{A}/snapshot.json  7b 7d\n{A}/meta.json \n{B}/meta.json{big}\nEND\n"
    got = _parse_framed(out.encode(), {A, B})
    assert got == {A: {"snapshot.json": b"{}", "meta.json": b""}, B: {"meta.json": None}}


@pytest.mark.parametrize(
    "bad",
    [
        GOOD[30:],  # cut at the head: the first lines are lost
        GOOD[:-4],  # cut at the tail
        GOOD.replace(b"BEGIN\n", b""),
        GOOD.replace(
            A.encode() + b"/snapshot.json", b"c" * 16 + b"/snapshot.json"
        ),  # not asked for
        GOOD.replace(b"meta.json !", b"other.json !"),
        GOOD.replace(b"7b7d\n" + A.encode(), b"7b7\n" + A.encode()),  # odd hex
    ],
)
def test_anything_but_the_exact_format_is_an_error(bad: bytes) -> None:
    with pytest.raises(EngineError):
        _parse_framed(bad, {A, B})


def test_a_held_signal_is_raised_after_the_block() -> None:
    done = []
    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        done.append("rest of the block")
    assert done == ["rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_signal_stays_ignored() -> None:
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, old)


def test_a_store_too_large_to_list_leaves_the_others_listed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Stores are read many to a helper; one whose metadata is more than a helper may
    print (forged) must not hide the others: the batch is read again by halves, and
    that store alone is left out, with a warning that names it."""
    from types import SimpleNamespace

    from voltool.engine.client import OutputTooLarge
    from voltool.store import catalog, format2

    stores = {f"voltool-store-v{i}": f"v{i}" for i in range(5)}
    bad = "voltool-store-v3"
    reads = []

    def read_stores(rt: object, names: dict[str, str]) -> list[format2.Listed]:
        reads.append(sorted(names))
        if bad in names:
            raise OutputTooLarge("a helper wrote more than 64 MiB of output")
        return [format2.Listed(s, src, A, {}) for s, src in sorted(names.items())]

    warned: list[str] = []
    rt = SimpleNamespace(reporter=SimpleNamespace(warn=warned.append))
    monkeypatch.setattr(format2, "read_stores", read_stores)
    got = catalog._read_stores(rt, stores)  # type: ignore[arg-type]
    assert sorted(listed.store for listed in got) == sorted(set(stores) - {bad})
    assert len(warned) == 1 and bad in warned[0]
    assert reads[0] == sorted(stores) and [bad] in reads


def test_an_import_is_not_what_the_next_snapshot_links_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An import's inodes and ctimes are a temporary volume's: linked from by identity, the
    next snapshot would copy everything. It serves a copy that links by content."""
    import datetime as dt

    from voltool.store import catalog
    from voltool.store import copy as store_copy
    from voltool.store.catalog import Snapshot
    from voltool.store.layout import SnapshotInfo

    def made(sid: str, kind: str, minute: int) -> Snapshot:
        created = dt.datetime(2026, 1, 1, 0, minute, tzinfo=dt.UTC)
        info = SnapshotInfo(2, sid, "v", created.isoformat(), kind, 1, 0, "0" * 64, started_ns=1)
        return Snapshot(
            sid, "voltool-store-v", "v", created, kind, "", True, info, base=f"snapshots/{sid}"
        )

    found = [made("a" * 16, "manual", 1), made("b" * 16, "import", 2)]
    monkeypatch.setattr(catalog, "find", lambda rt, source: found)
    rt: Any = object()
    by_identity = store_copy.latest(rt, "voltool-store-v", "v")
    by_content = store_copy.latest(rt, "voltool-store-v", "v", by_content=True)
    assert by_identity is not None and by_identity.id == "a" * 16
    assert by_content is not None and by_content.id == "b" * 16
