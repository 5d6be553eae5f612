from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.tarbuild import M, chunked, d, f, hard, make_tar, special, sym
from voltool.errors import ArchiveRejected
from voltool.tar.stream import TarReader
from voltool.tar.validate import MAX_PATH_BYTES, EntryValidator, Limits


def check(members: list[M], top: str | None = None, limits: Limits = Limits()) -> list[str]:
    v = EntryValidator(top, limits)
    reader = TarReader(chunked(make_tar(members), 512))
    return [v.check(e) for e in reader]


def test_plain_tree_is_accepted_and_relativised() -> None:
    assert check([d("."), d("./a"), f("./a/b"), sym("./s", "/etc"), hard("./h", "./a/b")]) == [
        ".",
        "a",
        "a/b",
        "s",
        "h",
    ]
    assert check([d("data"), f("data/x")], top="data") == [".", "x"]


@pytest.mark.parametrize(
    ("members", "rule"),
    [
        ([f("/etc/passwd")], "absolute path"),
        ([f("a/../../x")], "'..'"),
        ([f("../x")], "'..'"),
        ([f("a//b")], "not normalised"),
        ([f("a/./b")], "not normalised"),
        ([d("a"), sym("a/s", "/etc"), f("a/s/passwd")], "through the symlink 'a/s'"),
        ([sym("s", ".."), d("s/x")], "through the symlink 's'"),
        ([sym("s", "/"), hard("s/h", "x")], "through the symlink"),
        ([f("a"), f("a/b")], "parent 'a' is not a directory"),
        ([hard("h", "nothere")], "not an earlier file"),
        ([hard("h", "../outside")], "'..'"),
        ([hard("h", "/etc/shadow")], "absolute path"),
        ([d("d"), hard("h", "d")], "not an earlier file"),
        ([sym("s", "x"), hard("h", "s")], "not an earlier file"),
        ([special("dev", tarfile.CHRTYPE)], "char entries are not allowed"),
        ([special("dev", tarfile.BLKTYPE)], "block entries are not allowed"),
        ([special("fifo", tarfile.FIFOTYPE)], "fifo entries are not allowed"),
        ([f("a"), f("a")], "duplicate entry"),
        ([d("a"), f("a")], "duplicate entry"),
        ([f("a"), sym("a", "/etc")], "duplicate entry"),
        ([f("a/b"), sym("a", "/etc")], "replaces a directory"),
        ([f("x" * 256)], "longer than 255"),
        ([f("/".join(["y" * 200] * 21))], f"longer than {MAX_PATH_BYTES}"),
        ([sym("s", "")], "empty target"),
        ([d("/")], "empty name"),
    ],
)
def test_hostile_entries_are_rejected(members: list[M], rule: str) -> None:
    with pytest.raises(ArchiveRejected, match=rule.replace("(", r"\(").replace(".", r"\.")):
        check(members)


def test_nul_in_pax_path_is_rejected() -> None:
    info = tarfile.TarInfo("ok")
    info.pax_headers = {"path": "a\0b"}
    v = EntryValidator(None)
    with pytest.raises(ArchiveRejected, match="NUL"):
        for e in TarReader([info.tobuf(tarfile.PAX_FORMAT) + b"\0" * 1024]):
            v.check(e)


def test_entries_outside_the_top_directory_are_rejected() -> None:
    with pytest.raises(ArchiveRejected, match="outside"):
        check([d("data"), f("other/x")], top="data")
    with pytest.raises(ArchiveRejected, match="outside"):
        check([d("data"), d("data/a"), hard("data/h", "elsewhere/a")], top="data")


def test_root_must_be_a_directory() -> None:
    with pytest.raises(ArchiveRejected, match="root"):
        check([f("data")], top="data")


def test_caps_stop_before_content_is_read() -> None:
    with pytest.raises(ArchiveRejected, match="more than 2 entries"):
        check([f("a"), f("b"), f("c")], limits=Limits(max_entries=2))
    with pytest.raises(ArchiveRejected, match="more than 10 bytes"):
        check([f("a", b"x" * 6), f("b", b"y" * 6)], limits=Limits(max_bytes=10))


def test_special_files_when_allowed() -> None:
    assert check([special("fifo", tarfile.FIFOTYPE)], limits=Limits(allow_special=True)) == ["fifo"]


def test_repeated_directory_is_allowed() -> None:
    assert check([d("a"), f("a/x"), d("a")]) == ["a", "a/x", "a"]


# -- property: whatever is accepted, extracted, stays inside its root ----------

names = st.sampled_from(["a", "b", "c", "..", ".", "", "/", "a/b", "../a", "/etc"])
paths = st.lists(names, min_size=1, max_size=4).map("/".join)


@st.composite
def members(draw: st.DrawFn) -> list[M]:
    out: list[M] = []
    for _ in range(draw(st.integers(1, 8))):
        kind = draw(st.sampled_from(["f", "d", "s", "h"]))
        name = draw(paths)
        if kind == "f":
            out.append(f(name, b"x"))
        elif kind == "d":
            out.append(d(name))
        elif kind == "s":
            out.append(
                sym(name, draw(st.sampled_from(["/", "..", "../..", "a", "/tmp", "b/../.."])))
            )
        else:
            out.append(hard(name, draw(paths)))
    return out


def _escapes(root: Path, members_: list[M]) -> bool:
    """Would a naive extraction of these members (following symlinks) write outside root?"""
    links: dict[str, str] = {}
    for m in members_:
        parts = [p for p in m.name.split("/") if p not in ("", ".")]
        if m.name.startswith("/"):
            return True
        cur = root
        for i, p in enumerate(parts):
            cur = Path(os.path.normpath(cur / p))
            key = str(cur)
            if i < len(parts) - 1 and key in links:
                cur = Path(os.path.normpath(Path(key).parent / links[key]))
            if not str(cur).startswith(str(root)):
                return True
        if m.type == tarfile.SYMTYPE:
            links[str(cur)] = m.linkname
        if m.type == tarfile.LNKTYPE:
            tgt = os.path.normpath(root / m.linkname)
            if m.linkname.startswith("/") or not tgt.startswith(str(root)):
                return True
    return False


@given(ms=members())
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_accepted_archives_stay_inside_and_escapes_are_rejected(
    ms: list[M], tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("x") / "root"
    root.mkdir()
    try:
        check(ms)
    except ArchiveRejected:
        return
    assert not _escapes(root, ms), "an archive that escapes its root was accepted"
    # Extract for real with the most permissive filter: nothing may land outside root.
    outside = set(os.listdir(root.parent))
    with tarfile.open(fileobj=__import__("io").BytesIO(make_tar(ms))) as tar:
        tar.extractall(root, filter="fully_trusted")
    assert set(os.listdir(root.parent)) == outside
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            assert os.path.normpath(p).startswith(str(root))
