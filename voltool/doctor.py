"""Health checks: engine, helper image, state directory, and leftovers of dead processes."""

from __future__ import annotations

import os
from dataclasses import dataclass

from voltool import catalog, helper_image
from voltool.config import Config
from voltool.endpoint import resolve
from voltool.engine import Engine
from voltool.errors import VoltoolError
from voltool.recover import find_leftovers
from voltool.report import Reporter
from voltool.runtime import Runtime, open_journal
from voltool.state import state_dir


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str | None = None


def run_checks(config: Config) -> list[Check]:
    """Every check that can run; an unreachable engine ends the list early."""
    checks: list[Check] = []
    try:
        endpoint = resolve(config.host, config.context)
    except VoltoolError as e:
        return [Check("engine", "fail", str(e))]
    try:
        engine = Engine.connect(endpoint, config.timeout)
    except VoltoolError as e:
        return [
            Check("engine", "fail", str(e), "start the Docker Engine or set DOCKER_HOST / --host")
        ]
    version = engine.version()
    checks.append(
        Check(
            "engine",
            "ok",
            f"Docker Engine {version.get('Version', '?')} (API {version.get('ApiVersion', '?')})",
        )
    )
    checks.append(Check("endpoint", "ok", f"{endpoint.host} (from {endpoint.source})"))

    found = helper_image.status(engine, config.helper_image, config.busybox)
    if found.image:
        checks.append(Check("helper image", "ok", found.how))
    elif config.helper_image == "busybox" and helper_image.default_busybox_present(config.busybox):
        checks.append(Check("helper image", "ok", found.how, "voltool helper --build"))
    else:
        checks.append(
            Check(
                "helper image",
                "warn",
                found.how,
                "voltool helper --build, or install busybox-static",
            )
        )

    sdir = state_dir()
    try:
        sdir.mkdir(parents=True, exist_ok=True)
        writable = os.access(sdir, os.W_OK)
    except OSError:
        writable = False
    checks.append(
        Check(
            "state directory",
            "ok" if writable else "fail",
            str(sdir),
            None if writable else "set VOLTOOL_STATE_DIR to a writable directory",
        )
    )

    if found.image:
        journal = open_journal(engine, found.image, Reporter())
        rt = Runtime(engine, config, journal, Reporter(), found.image)
        left = find_leftovers(rt)
        for problem in journal.problems:
            checks.append(Check("journal", "warn", problem))
        items = (
            [f"interrupted {op.kind} {op.id} on {', '.join(op.volumes)}" for op in left.interrupted]
            + [f"orphaned helper container {c.short_id}" for c in left.helpers]
            + [f"stale lock on {h.volume!r} ({h.describe()})" for h in left.locks]
            + [f"incomplete snapshot {s.id} of {s.source!r}" for s in left.incomplete]
        )
        for f in left.frozen:
            done = "paused" if f.container.action == "pause" else "stopped"
            checks.append(
                Check(
                    "containers",
                    "fail",
                    f"container {f.container.name} was {done} by {f.op.kind} {f.op.id} "
                    "and not brought back",
                    "voltool recover",
                )
            )
        for s in catalog.list_snapshots(rt):
            if s.state == "damaged":
                checks.append(
                    Check(
                        "snapshots",
                        "warn",
                        f"snapshot {s.id} of {s.source!r} is damaged: {s.problem}",
                        f"voltool inspect {s.id}, then voltool delete {s.id} if it is not needed",
                    )
                )
        if items:
            for item in items:
                checks.append(Check("leftovers", "warn", item, "voltool recover"))
        else:
            checks.append(
                Check(
                    "leftovers",
                    "ok",
                    "no interrupted operations, orphaned helpers, stale locks "
                    "or incomplete snapshots",
                )
            )
    engine.close()
    return checks
