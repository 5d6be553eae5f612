from __future__ import annotations

import json
from pathlib import Path

from voltool.journal import FileRecords, Journal
from voltool.owner import Owner, current

OP1, OP2, MINE, DEAD, A = (f"{n:016x}" for n in (1, 2, 0xAA, 0xDD, 0xA))


def dead_owner() -> str:
    me = current()
    return Owner(me.host, me.boot_id, 999_999_999, "1", me.uid).token()


def test_steps_merge_into_operations(tmp_path: Path) -> None:
    j = Journal(FileRecords(tmp_path / "j.jsonl"))
    j.append(OP1, "begin", kind="snapshot", volumes=["v"])
    j.append(OP1, "quiesce", containers=[{"id": "c"}])
    j.append(OP2, "begin", kind="snapshot", volumes=["w"])
    j.append(OP2, "done")
    ops = j.operations()
    assert ops[OP1].steps == ["begin", "quiesce"] and not ops[OP1].finished
    assert ops[OP1].data["containers"] == [{"id": "c"}]
    assert ops[OP2].finished


def test_only_ops_of_dead_processes_are_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(FileRecords(path))
    j.append(MINE, "begin", kind="snapshot", volumes=["v"])  # this process: alive
    with open(path, "a") as fh:
        fh.write(
            json.dumps(
                {
                    "op": DEAD,
                    "step": "begin",
                    "kind": "restore",
                    "volumes": ["w"],
                    "owner": dead_owner(),
                }
            )
            + "\n"
        )
    assert [op.id for op in j.interrupted()] == [DEAD]
    assert j.pending_on("w") is not None and j.pending_on("v") is None


def test_torn_and_garbage_lines_are_skipped_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(FileRecords(path))
    j.append(A, "begin", kind="snapshot", volumes=["v"])
    with open(path, "a") as fh:
        fh.write('[1,2]\n{"op": "a", "ste')
    ops = j.operations()
    assert ops[A].steps == ["begin"]
    assert len(j.problems) == 2 and "line 2" in j.problems[0]


def test_missing_journal_is_empty(tmp_path: Path) -> None:
    assert Journal(FileRecords(tmp_path / "none.jsonl")).operations() == {}


def test_records_of_malformed_ids_are_skipped_and_only_begin_says_who_and_what(
    tmp_path: Path,
) -> None:
    path = tmp_path / "j.jsonl"
    j = Journal(FileRecords(path))
    j.append(OP1, "begin", kind="restore", volumes=["v"], target="v")  # this process: alive
    with open(path, "a") as fh:
        for rec in (
            {"op": "../../etc", "step": "begin", "kind": "restore", "volumes": ["v"]},
            # A later record must not make a live operation look dead, nor retarget it.
            {"op": OP1, "step": "stage", "owner": dead_owner(), "target": "victim"},
            {"op": OP1, "step": "begin", "kind": "snapshot", "volumes": ["w"], "owner": "x"},
        ):
            fh.write(json.dumps(rec) + "\n")
    ops = j.operations()
    assert list(ops) == [OP1]
    op = ops[OP1]
    assert (op.kind, op.volumes, op.data["target"]) == ("restore", ["v"], "v")
    assert not op.interrupted
