from __future__ import annotations

import json
from pathlib import Path

from voltool.journal import FileRecords, Journal
from voltool.owner import Owner, current


def dead_owner() -> str:
    me = current()
    return Owner(me.host, me.boot_id, 999_999_999, "1", me.uid).token()


def test_steps_merge_into_operations(tmp_path: Path) -> None:
    j = Journal(FileRecords(tmp_path / "j.jsonl"))
    j.append("op1", "begin", kind="snapshot", volumes=["v"])
    j.append("op1", "quiesce", containers=[{"id": "c"}])
    j.append("op2", "begin", kind="snapshot", volumes=["w"])
    j.append("op2", "done")
    ops = j.operations()
    assert ops["op1"].steps == ["begin", "quiesce"] and not ops["op1"].finished
    assert ops["op1"].data["containers"] == [{"id": "c"}]
    assert ops["op2"].finished


def test_only_ops_of_dead_processes_are_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(FileRecords(path))
    j.append("mine", "begin", kind="snapshot", volumes=["v"])  # this process: alive
    with open(path, "a") as fh:
        fh.write(
            json.dumps(
                {
                    "op": "dead",
                    "step": "begin",
                    "kind": "restore",
                    "volumes": ["w"],
                    "owner": dead_owner(),
                }
            )
            + "\n"
        )
    assert [op.id for op in j.interrupted()] == ["dead"]
    assert j.pending_on("w") is not None and j.pending_on("v") is None


def test_torn_and_garbage_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(FileRecords(path))
    j.append("a", "begin", kind="snapshot", volumes=["v"])
    with open(path, "a") as fh:
        fh.write('[1,2]\n{"op": "a", "ste')
    ops = j.operations()
    assert ops["a"].steps == ["begin"]
    assert len(j.problems) == 2 and "line 2" in j.problems[0]


def test_missing_journal_is_empty(tmp_path: Path) -> None:
    assert Journal(FileRecords(tmp_path / "none.jsonl")).operations() == {}
