"""Operation records kept in the engine, beside the locks, so that recovery needs nothing local.

Each journal record of an operation is one created, never-started container
whose labels hold the record (`io.voltool.record`, canonical JSON), its order
among the operation's records (`io.voltool.record.seq`) and the volumes the
operation works on. Whoever reaches the engine (another user, `$HOME` or host)
reads the same records, and an operation of one engine is never seen, nor
marked recovered, through another.

Invariant: an operation's records stay in the engine until its terminal record
("done", "failed" or "recovered") is written; only then are they removed,
the terminal record last. Records that survive next to a terminal one (a
removal cut short) describe a finished operation, and are removed by
`voltool recover`.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections.abc import Iterator
from typing import Any

from voltool.engine import labels as L
from voltool.engine.client import ContainerInfo, Engine
from voltool.errors import VoltoolError
from voltool.ids import is_valid_id
from voltool.owner import current

_counter = itertools.count()


class EngineRecords:
    """The journal's durable store: records as labelled containers in the engine."""

    def __init__(self, engine: Engine, image: str) -> None:
        self.engine = engine
        self.image = image
        self.problems: list[str] = []

    def write(self, record: dict[str, Any], volumes: list[str]) -> None:
        """Store one record; when this returns, every client of the engine can read it."""
        labels = {
            **L.managed(L.ROLE_RECORD, str(record["op"]), current().token()),
            L.RECORD: json.dumps(record, sort_keys=True, ensure_ascii=True),
            L.RECORD_SEQ: _seq(),
            L.VOLUMES: ",".join(volumes),
        }
        self.engine.create_container(self.image, [], labels)

    def read(self) -> Iterator[dict[str, Any]]:
        """Every record in the engine, each operation's in the order they were written."""
        self.problems = []
        found = self.engine.managed_containers(L.ROLE_RECORD)
        for c in sorted(found, key=_order):
            rec = _parse(c)
            if rec is None:
                self.problems.append(f"operation record {c.short_id} is unreadable and was skipped")
                continue
            yield rec

    def forget(self, op: str) -> None:
        """Remove the records of a finished operation, the terminal one last."""
        found = self.engine.managed_containers(L.ROLE_RECORD, where={L.OP: op})
        failed: VoltoolError | None = None
        for c in sorted(found, key=_order):
            try:
                self.engine.remove_container(c.id)
            except VoltoolError as e:  # the others still go; recover removes what stays
                failed = e
        if failed is not None:
            raise failed


def _order(c: ContainerInfo) -> tuple[int, str]:
    """The engine's own creation time first (a client cannot set it: a record made later
    cannot pass for an earlier one), then the writer's sequence within a second."""
    return c.created, c.labels.get(L.RECORD_SEQ, "")


def unreadable(engine: Engine) -> list[ContainerInfo]:
    """Record containers that hold no record voltool can read (damaged or forged)."""
    return [c for c in engine.managed_containers(L.ROLE_RECORD) if _parse(c) is None]


def _seq() -> str:
    # Nanoseconds first (records of one operation may come from several processes:
    # the operation, then `recover`), then the writer and a counter for ties.
    return f"{time.time_ns():020d}-{os.getpid():010d}-{next(_counter):06d}"


def _parse(c: ContainerInfo) -> dict[str, Any] | None:
    """The record `c` holds, or None if it is not one: anything read back from the engine
    is data to check (an operation's id names directories that recovery removes)."""
    try:
        rec = json.loads(c.labels.get(L.RECORD, ""))
    except ValueError:
        return None
    if (
        not isinstance(rec, dict)
        or not isinstance(rec.get("op"), str)
        or not is_valid_id(rec["op"])
        or rec["op"] != c.labels.get(L.OP)
        or not isinstance(rec.get("step"), str)
    ):
        return None
    return rec
