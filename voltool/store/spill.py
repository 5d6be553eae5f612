"""Per-entry state kept off the heap: memory stays flat whatever the number of entries.

A snapshot remembers something of every entry of a tree (its manifest line,
what the validator has seen). Held in Python objects that costs some 500
bytes an entry: a gigabyte for two million files. A `Table` keeps it in a
private temporary SQLite database instead: SQLite holds a bounded page cache
in memory and spills the rest to a temporary file that it unlinks as soon as
it opens it, so nothing is left on disk when the process ends, however it
ends. Small trees never touch the disk.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator

from voltool.errors import NoSpace, VoltoolError

# Each table's page cache; a process holds at most a handful of tables at once.
CACHE_KIB = 2048
# Writes are batched: lookups see them at once, SQLite sees them a batch at a time.
_BATCH = 2048


class Duplicate(KeyError):
    """`Table.add` was given a key the table already holds."""


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """SQLite's failures as voltool's: a full or unwritable temporary directory is
    the user's to fix, not a bug."""
    try:
        yield
    except sqlite3.Error as e:
        where = "the temporary directory ($SQLITE_TMPDIR, else $TMPDIR, else /var/tmp or /tmp)"
        if "full" in str(e):
            raise NoSpace(f"{where} is full: voltool keeps per-entry state there") from None
        raise VoltoolError(f"temporary per-entry state in {where} failed: {e}") from None


class Table:
    """A map from byte-string keys to text values, iterated in key (byte) order."""

    def __init__(self) -> None:
        with _reported():
            # "": a private, temporary database, gone when the connection closes.
            self._db = sqlite3.connect("", isolation_level=None, check_same_thread=False)
            self._db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            self._db.execute("PRAGMA journal_mode=MEMORY")  # OFF makes ROLLBACK undefined
            self._db.execute("PRAGMA synchronous=OFF")
            self._db.execute("CREATE TABLE t (k BLOB PRIMARY KEY, v TEXT NOT NULL) WITHOUT ROWID")
        self._pending: dict[bytes, str] = {}
        self._new: set[bytes] = set()  # keys of _pending that must not replace a stored one

    def __setitem__(self, key: bytes, value: str) -> None:
        """Set `key`, replacing what it held."""
        self._pending[key] = value
        self._new.discard(key)
        if len(self._pending) >= _BATCH:
            self.flush()

    def add(self, key: bytes, value: str) -> None:
        """Set a key the table does not hold yet; raise Duplicate (now or at a later
        write, at the latest when the table is next read) if it does."""
        if key in self._pending:
            raise Duplicate(key)
        self._pending[key] = value
        self._new.add(key)
        if len(self._pending) >= _BATCH:
            self.flush()

    def get(self, key: bytes) -> str | None:
        value = self._pending.get(key)
        if value is not None:
            return value
        with _reported():
            row = self._db.execute("SELECT v FROM t WHERE k = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def __contains__(self, key: bytes) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        self.flush()
        with _reported():
            return int(self._db.execute("SELECT count(*) FROM t").fetchone()[0])

    def items(self) -> Iterator[tuple[bytes, str]]:
        """(key, value) in key order."""
        self.flush()
        # Fetched in pages on a cursor of its own. Whether writes made to this
        # table while it is iterated show up is undefined (SQLite): make none.
        with _reported():
            cursor = self._db.execute("SELECT k, v FROM t ORDER BY k")
            rows = cursor.fetchmany(512)
        while rows:
            for k, v in rows:
                yield bytes(k), str(v)
            with _reported():
                rows = cursor.fetchmany(512)

    def values(self) -> Iterator[str]:
        for _, v in self.items():
            yield v

    def flush(self) -> None:
        """Hand the batched writes to SQLite."""
        if not self._pending:
            return
        pending, new = self._pending, self._new
        self._pending, self._new = {}, set()
        with _reported(), self._db:  # one transaction for the batch
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO t VALUES (?, ?)",
                ((k, v) for k, v in pending.items() if k not in new),
            )
            try:
                self._db.executemany("INSERT INTO t VALUES (?, ?)", ((k, pending[k]) for k in new))
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise Duplicate(next((k for k in new if self.get(k) is not None), b"")) from None

    def close(self) -> None:
        self._pending.clear()
        self._db.close()
