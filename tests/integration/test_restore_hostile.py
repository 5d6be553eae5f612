"""Hostile restore streams, through the real restore path and the real engine.

A real filesystem cannot hold "an entry below a symlink", so these streams are
substituted for the snapshot volume's archive stream; everything else (plan,
locks, staging PUT into the target, roll-back) is the real thing. Only format 1
restores from an archive stream: its snapshots are taken in format 1 here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.dockertools import F1, Docker, records, voltool
from tests.tarbuild import M, d, f, hard, make_tar
from voltool import config
from voltool.errors import IntegrityError
from voltool.ops import restore
from voltool.report import Reporter
from voltool.runtime import open_runtime
from voltool.store import catalog

pytestmark = pytest.mark.engine

TREE = "cd /v && mkdir sub && echo a > a && ln -s / root-link && echo s > sub/s"


def _entry(m: dict[str, object], name: str) -> M:
    """A tar member that matches manifest entry `m` exactly, under `name`."""
    kind = {"file": b"0", "dir": b"5", "symlink": b"2"}[str(m["type"])]
    return M(
        name,
        kind,
        b"",
        int(m["mode"]),  # type: ignore[call-overload]
        int(m["uid"]),  # type: ignore[call-overload]
        int(m["gid"]),  # type: ignore[call-overload]
        int(m["mtime"]),  # type: ignore[call-overload]
        str(m.get("target") or ""),
    )


@pytest.mark.parametrize(
    ("hostile", "rule"),
    [
        (lambda man: [_entry(man["."], "data"), f("data/../../escaped")], "'..' in a name"),
        (lambda man: [_entry(man["."], "data"), f("/etc/escaped")], "absolute path"),
        (
            lambda man: [
                _entry(man["."], "data"),
                _entry(man["root-link"], "data/root-link"),
                f("data/root-link/etc/escaped"),
            ],
            "written through the symlink 'root-link'",
        ),
        (
            lambda man: [
                _entry(man["."], "data"),
                _entry(man["root-link"], "data/root-link"),
                d("data/root-link/tmp"),
            ],
            "written through the symlink 'root-link'",
        ),
        (lambda man: [_entry(man["."], "data"), hard("data/a", "/etc/shadow")], "absolute path"),
        (lambda man: [_entry(man["."], "data"), hard("data/a", "data/../../x")], "'..' in a name"),
        (lambda man: [_entry(man["."], "data"), M("data/a", b"3")], "char entries are not allowed"),
        (lambda man: [_entry(man["."], "data"), f("outside/x")], "outside the archive's data/"),
    ],
)
def test_hostile_stream_is_refused_and_nothing_is_written(
    dk: Docker,
    volume: Callable[..., str],
    hostile: Callable[[dict[str, dict[str, object]]], list[M]],
    rule: str,
) -> None:
    target = volume(TREE)
    canary = volume("echo canary > /v/c")
    r = voltool("snapshot", "--json", target, env=F1)
    assert r.code == 0, r.err
    sid = records(r.out)[0]["id"]
    man = {e["path"]: e for e in dk.manifest(f"voltool-snap-{sid}")}
    dk.run({target: "/v"}, "echo changed > /v/a")
    before, canary_before = dk.listing(target), dk.listing(canary)

    rt = open_runtime(config.load(), Reporter())
    snap = catalog.resolve(rt, sid)
    opts = restore.RestoreOptions(summary=False)
    p = restore.plan(rt, snap, opts)
    real = rt.engine.get_archive
    payload = make_tar(hostile(man))

    def substituted(cid: str, path: str) -> Iterator[bytes]:
        if path == "/snap/data":
            yield from [payload[i : i + 1000] for i in range(0, len(payload), 1000)]
        else:
            yield from real(cid, path)

    rt.engine.get_archive = substituted  # type: ignore[method-assign]
    with pytest.raises(IntegrityError, match=rule.replace("'", ".")):
        restore.execute(rt, p, opts)
    assert dk.listing(target).entries == before.entries
    assert dk.listing(canary).entries == canary_before.entries
    assert dk.managed_containers() == []
    # the failure was clean: nothing is pending, a real restore goes through
    assert voltool("restore", "--yes", sid).code == 0
