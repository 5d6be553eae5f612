"""Reading a stream a little ahead, in a thread of its own.

A snapshot moves bytes from one engine request (GET) to another (PUT). In one
thread, the two take turns: while voltool waits for the engine to take what
it sent, nothing is read, and the other way round. Reading ahead in a second
thread (socket reads and SHA-256 release the GIL) lets both run at once, as
the two processes of `docker cp | docker cp` do. Memory stays bounded by the
queue's depth.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable

_END = object()
_POLL = 0.05  # seconds between looks at the stop flag while the queue is full


def read_ahead(
    chunks: Iterable[bytes], depth: int, wake: Callable[[], None]
) -> Generator[bytes, None, None]:
    """Yield `chunks`, read up to `depth` chunks ahead by a thread.

    An error in the reading thread is raised here, in the caller's. When the
    generator is closed or exhausted, `wake` is called, which must make a read
    in progress return (shut the socket down: closing it would wait for the
    read), and the thread is joined.
    """
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
        except BaseException as e:  # handed to the reader, raised there
            put(e)
            return
        put(_END)

    thread = threading.Thread(target=produce, name="voltool-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            assert isinstance(item, bytes)
            yield item
    finally:
        stop.set()
        try:
            if thread.is_alive():  # cut short: its read may be waiting on the socket
                wake()
        finally:
            thread.join(10)
