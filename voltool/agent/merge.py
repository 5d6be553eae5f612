"""Reading a manifest stream alongside a walk, both in the same order.

Both sides are in ascending `names.order_key` order, so one pass over each
pairs them: memory stays one entry, whatever the length of either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from .entry import Entry
from .names import order_key


class ManifestCursor:
    """A manifest stream, read forward as the walk reaches each path.

    Raises ValueError on a malformed line, or on keys that do not strictly
    ascend (a line out of order or repeated): such a manifest was not written
    by the agent, and nothing in it may be trusted.
    """

    def __init__(self, lines: Iterable[bytes]) -> None:
        self._lines = iter(lines)
        self._last: bytes | None = None
        self._next: Entry | None = None
        self._next_key = b""
        self._advance()

    def _advance(self) -> None:
        line = next(self._lines, None)
        if line is None:
            self._next = None
            return
        entry = Entry.parse(line)
        key = order_key(entry.path)
        if self._last is not None and key <= self._last:
            raise ValueError(f"manifest is out of order at {entry.path!r:.80}")
        self._last = key
        self._next, self._next_key = entry, key

    def take(self, path: bytes, skipped: Callable[[Entry], None] | None = None) -> Entry | None:
        """The entry for `path`, or None; entries before it are passed to `skipped`.

        Paths must be asked for in ascending order.
        """
        key = order_key(path)
        while self._next is not None and self._next_key < key:
            if skipped is not None:
                skipped(self._next)
            self._advance()
        if self._next is not None and self._next_key == key:
            found = self._next
            self._advance()
            return found
        return None

    def rest(self) -> Iterator[Entry]:
        """The entries not taken or skipped yet."""
        while self._next is not None:
            found = self._next
            self._advance()
            yield found
