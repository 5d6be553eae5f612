"""How a container an interrupted operation quiesced is brought back: a pure decision."""

from __future__ import annotations

import pytest

from voltool.engine.quiesce import Quiesced, Revival, revival
from voltool.journal import Operation
from voltool.ops.recover import Scope

PAUSED = Quiesced("c1", "db", "pause")
STOPPED = Quiesced("c2", "web", "stop")


@pytest.mark.parametrize(
    ("q", "status", "stop_begun", "want"),
    [
        (PAUSED, "paused", False, Revival.UNPAUSE),
        (PAUSED, "running", False, None),  # someone unpaused it
        (PAUSED, "exited", False, Revival.START),  # the engine restarted while it was frozen
        (PAUSED, None, False, None),  # removed
        (STOPPED, "exited", True, Revival.START),
        (STOPPED, "created", False, Revival.START),
        (STOPPED, "running", True, Revival.AWAIT_STOP_THEN_START),  # the stop may be in flight
        (STOPPED, "running", False, None),  # never reached: never touched
        (STOPPED, "paused", True, None),  # someone else paused it: theirs
        (STOPPED, "restarting", True, None),
        (STOPPED, None, True, None),
    ],
)
def test_revival(q: Quiesced, status: str | None, stop_begun: bool, want: Revival | None) -> None:
    assert revival(q, status, stop_begun) == want


def test_scope_of_recover() -> None:
    restore = Operation("r", "restore", ["pg"], data={"target": "pg"})
    imported = Operation("i", "import", ["voltool-snap-x"], data={"snapshots": {"pg": "x"}})
    other = Operation("o", "snapshot", ["redis"])
    everything, pg = Scope(), Scope(frozenset({"pg"}))
    assert all(everything.op(op) for op in (restore, imported, other))
    assert [op.id for op in (restore, imported, other) if pg.op(op)] == ["r", "i"]
