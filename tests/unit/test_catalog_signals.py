from __future__ import annotations

import os
import signal

import pytest

from voltool.errors import EngineError
from voltool.signals import deferred_interrupts
from voltool.store.catalog import _parse_framed

A, B = "a" * 16, "b" * 16
GOOD = f"BEGIN\n{A}/snapshot.json 7b7d\n{A}/meta.json !\n{B}/meta.json 7b7d\nEND\n".encode()


def test_reader_output_is_parsed_by_id_and_file() -> None:
    got = _parse_framed(GOOD, {A, B})
    assert got == {A: {"snapshot.json": b"{}", "meta.json": None}, B: {"meta.json": b"{}"}}


def test_od_spacing_empty_files_and_oversized_files() -> None:
    big = " 20" * (1024 * 1024 + 1)  # one byte over the bound: read as "there, but bad"
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
