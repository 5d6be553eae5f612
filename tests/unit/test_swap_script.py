"""The restore's swap script, run for real by the host's busybox on scratch directories."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from voltool.sh import program
from voltool.store.layout import Names

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.access(BUSYBOX, os.X_OK), reason="needs busybox")
NAMES = Names.for_op("0123456789abcdef")


def tree(root: Path) -> dict[str, str]:
    """Every entry under root: files by content, directories as "/"."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = (
            "/"
            if p.is_dir() and not p.is_symlink()
            else ("->" + os.readlink(p) if p.is_symlink() else p.read_text())
        )
    return out


def run_swap(root: Path, mtime: int = 1_000_000_000, old_mtime: str = "999") -> None:
    st = root.stat()
    subprocess.run(
        [
            BUSYBOX,
            "sh",
            "-c",
            program("restore-swap"),
            "sh",
            NAMES.stage,
            NAMES.old,
            NAMES.mark,
            "750",
            f"{st.st_uid}:{st.st_gid}",
            str(mtime),
            old_mtime,
        ],
        env={"VOLTOOL_ROOT": str(root), "PATH": os.path.dirname(BUSYBOX) + ":/usr/bin:/bin"},
        check=True,
        capture_output=True,
    )


@pytest.fixture
def volume(tmp_path: Path) -> Path:
    root = tmp_path / "v"
    root.mkdir()
    (root / "db.txt").write_text("OLD DATABASE")
    (root / ".hidden").write_text("old hidden")
    (root / "dir").mkdir()
    (root / "dir" / "x").write_text("old x")
    (root / "-rf").write_text("odd name")
    stage = root / NAMES.stage
    stage.mkdir()
    (stage / "db.txt").write_text("RESTORED")
    (stage / ".dot").write_text("restored dot")
    (stage / "new").mkdir()
    (stage / "new" / "y").write_text("restored y")
    os.symlink("db.txt", stage / "link")
    return root


RESTORED = {
    ".dot": "restored dot",
    "db.txt": "RESTORED",
    "link": "->db.txt",
    "new": "/",
    "new/y": "restored y",
}
OLD = {
    ".hidden": "old hidden",
    "-rf": "odd name",
    "db.txt": "OLD DATABASE",
    "dir": "/",
    "dir/x": "old x",
}


def split(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    everything = tree(root)
    old = {k.split("/", 1)[1]: v for k, v in everything.items() if k.startswith(NAMES.old + "/")}
    top = {k: v for k, v in everything.items() if not k.startswith(".voltool-")}
    return top, old


def test_swap_puts_the_staged_tree_in_place_and_keeps_the_old(volume: Path) -> None:
    run_swap(volume)
    top, old = split(volume)
    assert top == RESTORED and old == OLD
    assert (volume / NAMES.mark).exists() and not (volume / NAMES.stage).exists()
    assert oct(volume.stat().st_mode & 0o7777) == "0o750"
    assert int(volume.stat().st_mtime) == 1_000_000_000
    assert int((volume / NAMES.old).stat().st_mtime) == 999


def test_running_it_again_changes_nothing(volume: Path) -> None:
    run_swap(volume)
    first = tree(volume)
    run_swap(volume)
    assert tree(volume) == first


def test_a_finished_and_cleaned_up_swap_is_never_replayed(volume: Path) -> None:
    run_swap(volume)
    shutil.rmtree(volume / NAMES.old)
    (volume / NAMES.mark).unlink()
    (volume / "written-after").write_text("new data")
    run_swap(volume)  # a stale replay: neither marker nor staging directory
    assert tree(volume) == {**RESTORED, "written-after": "new data"}


def test_a_marker_planted_before_the_swap_does_not_skip_phase_1(volume: Path) -> None:
    # The volume's containers see the staging directory's name, and so the marker's.
    (volume / NAMES.mark).write_text("")
    run_swap(volume)
    top, old = split(volume)
    assert top == RESTORED and old == OLD


def test_a_cleanup_cut_after_the_old_data_went_is_not_replayed_as_phase_1(volume: Path) -> None:
    run_swap(volume)
    shutil.rmtree(volume / NAMES.old)  # cut between removing the old data and the marker
    run_swap(volume)
    top, old = split(volume)
    assert top == RESTORED and old == {}


def test_a_staging_directory_replaced_by_a_symlink_stops_the_swap(
    volume: Path, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    (volume / NAMES.stage).rename(elsewhere)
    (volume / NAMES.stage).symlink_to(elsewhere)
    with pytest.raises(subprocess.CalledProcessError):
        run_swap(volume)
    top, old = split(volume)
    assert top == OLD and old == {} and tree(elsewhere)["db.txt"] == "RESTORED"


def test_phase_1_rerun_never_overwrites_what_it_moved(volume: Path) -> None:
    old = volume / NAMES.old
    old.mkdir()
    (volume / "db.txt").rename(old / "db.txt")  # cut after moving db.txt ...
    (volume / "db.txt").write_text("FRESH EMPTY DB")  # ... and an app wrote it again
    run_swap(volume)
    top, kept = split(volume)
    assert top == RESTORED
    assert kept["db.txt"] == "OLD DATABASE"
    assert kept[".voltool-late-0/db.txt"] == "FRESH EMPTY DB"


def test_phase_2_keeps_what_appeared_since_phase_1(volume: Path) -> None:
    run_swap_phase_1_only(volume)
    (volume / "new").mkdir()  # someone wrote a name the staged tree has
    (volume / "new" / "theirs").write_text("theirs")
    (volume / "db.txt").write_text("late write")
    run_swap(volume)
    top, kept = split(volume)
    assert top == RESTORED
    # In glob order: db.txt first, then new.
    assert kept[".voltool-late-0/db.txt"] == "late write"
    assert kept[".voltool-late-1/new/theirs"] == "theirs"


def run_swap_phase_1_only(root: Path) -> None:
    """Phase 1 done and its marker written, phase 2 not begun."""
    old = root / NAMES.old
    old.mkdir()
    for p in list(root.iterdir()):
        if not p.name.startswith(".voltool-"):
            p.rename(old / p.name)
    (root / NAMES.mark).touch()


def test_a_time_busybox_cannot_set_does_not_jam_the_swap(volume: Path) -> None:
    run_swap(volume, mtime=-1, old_mtime="-1")  # busybox: "touch: invalid date '@-1'"
    top, old = split(volume)
    assert top == RESTORED and old == OLD


def test_many_entries_with_any_names_move_in_bulk_and_exactly(volume: Path) -> None:
    names = [f"f{i}" for i in range(300)] + ["with\nnewline", " lead", "-n", "..x", "*"]
    for n in names:
        (volume / n).write_text("old " + n)
        (volume / NAMES.stage / n).write_text("new " + n)
    os.symlink("/nowhere", volume / "dangling")  # a dangling symlink moves too
    run_swap(volume)
    top, old = split(volume)
    assert top == {**RESTORED, **{n: "new " + n for n in names}}
    assert old == {**OLD, **{n: "old " + n for n in names}, "dangling": "->/nowhere"}


def test_phase_2_keeps_a_dangling_symlink_that_appeared(volume: Path) -> None:
    """busybox mv -n replaces a dangling symlink: the bulk move must not run here."""
    run_swap_phase_1_only(volume)
    os.symlink("/run/nonexistent", volume / "db.txt")
    run_swap(volume)
    top, kept = split(volume)
    assert top == RESTORED
    assert kept[".voltool-late-0/db.txt"] == "->/run/nonexistent"


def test_phase_1_rerun_keeps_a_dangling_symlink_it_moved(volume: Path) -> None:
    old = volume / NAMES.old
    old.mkdir()
    os.symlink("/run/x", old / "cfg")  # moved there by a cut first run ...
    (volume / "cfg").write_text("written since")  # ... and the name written again
    run_swap(volume)
    top, kept = split(volume)
    assert top == RESTORED
    assert kept["cfg"] == "->/run/x" and kept[".voltool-late-0/cfg"] == "written since"
