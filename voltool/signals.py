"""Holding Ctrl-C and SIGTERM back across a short section that must not be cut in two."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Run the block to its end even if SIGINT or SIGTERM arrives; then raise KeyboardInterrupt.

    Only for short sections whose halves must never be separated (a swap and
    the record that it is done). SIGKILL cannot be held: the journal covers it.
    Outside the main thread signals cannot be caught here, and nothing is held.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []

    def hold(signum: int, frame: FrameType | None) -> None:
        caught.append(signum)

    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for s, handler in previous.items():
        if handler is not signal.SIG_IGN:  # an ignored signal stays ignored
            signal.signal(s, hold)
    try:
        yield
    finally:
        for s, handler in previous.items():
            # None: a handler not installed from Python; the default is the best we can put back.
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
    if caught:
        raise KeyboardInterrupt
