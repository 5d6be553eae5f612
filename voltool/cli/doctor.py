"""Health checks: configuration, engine, helper and agent images, state directory, leftovers.

Every check that can run does: a broken configuration file, a missing or
unusable helper image, are failed checks among the others, never the end of
the list. Only an engine that cannot be reached ends it early.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from voltool import remotes
from voltool.config import Config, load_checked
from voltool.engine import agent_image, helper_image
from voltool.engine import labels as L
from voltool.engine.client import Engine
from voltool.engine.endpoint import resolve
from voltool.engine.quiesce import Mode
from voltool.errors import EngineUnreachable, VoltoolError
from voltool.ops import prune
from voltool.ops.recover import Leftovers, find_leftovers
from voltool.report import Reporter
from voltool.runtime import Runtime, open_journal
from voltool.state import state_dir
from voltool.store import catalog
from voltool.words import quoted


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail"
    detail: str
    fix: str | None = None


def run_checks(overrides: dict[str, Any] | None = None) -> list[Check]:
    """Every check that can run; an unreachable engine ends the list early."""
    config, problems = load_checked(overrides)
    checks = [*_config_checks(config, problems), _format_check(config)]
    try:
        endpoint = resolve(config.host, config.context)
    except VoltoolError as e:
        return [*checks, Check("engine", "fail", str(e))]
    try:
        engine = Engine.connect(endpoint, config.timeout)
    except VoltoolError as e:
        return [
            *checks,
            Check("engine", "fail", str(e), "start the Docker Engine or set DOCKER_HOST / --host"),
        ]
    try:
        version = engine.version()
        release, api = version.get("Version", "?"), version.get("ApiVersion", "?")
        checks.append(Check("engine", "ok", f"Docker Engine {release} (API {api})"))
        checks.append(Check("endpoint", "ok", f"{endpoint.host} (from {endpoint.source})"))
        image, check = _image_check(engine, config)
        checks.append(check)
        checks.append(_agent_check(engine, config))
        checks += _remote_checks(engine, config)
        checks.append(_state_check())
        journal = open_journal(engine, image, Reporter())
        checks += _leftover_checks(Runtime(engine, config, journal, Reporter(), image))
    except EngineUnreachable as e:
        checks.append(Check("engine", "fail", str(e), "start the Docker Engine"))
    finally:
        engine.close()
    return checks


def _config_checks(config: Config, problems: list[str]) -> list[Check]:
    where = str(config.file) if config.file else "no configuration file: defaults"
    fix = f"edit {config.file or 'the configuration file'}"
    if not problems:
        try:
            prune.policies(config, None, None)
            remotes.from_config(config)
        except VoltoolError as e:
            problems = [str(e)]
    if problems:
        return [Check("config", "fail", p, fix) for p in problems]
    return [Check("config", "ok", where)]


# What each format is, as doctor names it.
FORMATS = {
    1: "format 1: a snapshot volume each, copied through the archive API",
    2: "format 2: a store per volume, incremental, copied by the agent",
}


def _format_check(config: Config) -> Check:
    """The format new snapshots take, and where that setting comes from."""
    where = config.sources.get("format", "default")
    return Check("format", "ok", f"new snapshots take {FORMATS[config.format]} (from {where})")


def _image_check(engine: Engine, config: Config) -> tuple[str, Check]:
    """The helper image if it is there and usable ("" if not), and what was found."""
    found = helper_image.status(engine, config.helper_image, config.busybox)
    if found.image:
        try:
            reason = helper_image.unusable(engine, found.image)
        except EngineUnreachable:
            raise
        except VoltoolError as e:
            reason = f"checking it failed: {e}"
        if reason:
            return "", Check(
                "helper image",
                "fail",
                f"{found.image} cannot run voltool's helpers: {reason}",
                "choose another with --helper-image (or helper_image in the config file)",
            )
        return found.image, Check("helper image", "ok", found.how)
    if config.helper_image == "busybox" and helper_image.default_busybox_present(config.busybox):
        return "", Check("helper image", "ok", found.how, "voltool helper --build")
    return "", Check(
        "helper image", "warn", found.how, "voltool helper --build, or install busybox-static"
    )


def _agent_check(engine: Engine, config: Config) -> Check:
    """Whether the agent image is there and runs the agent, and how it was made."""
    try:
        found = agent_image.status(engine, config.busybox)
    except EngineUnreachable:
        raise
    except VoltoolError as e:
        return Check("agent image", "fail", f"checking it failed: {e}", "voltool helper --build")
    if found.image:
        return Check("agent image", "ok", found.how)
    if found.problem:
        return Check(
            "agent image",
            "fail",
            found.how,
            f"docker rmi {found.how.split()[0]}, then voltool helper --build",
        )
    return Check(
        "agent image",
        "ok" if found.offline else "warn",
        found.how,
        "voltool helper --build" if found.offline else "install busybox-static",
    )


def _remote_checks(engine: Engine, config: Config) -> list[Check]:
    """With remotes configured: that the agent image carries restic (nothing is read from
    a remote, nor any secret: that is what `verify --remote` is for)."""
    try:
        found = remotes.from_config(config)
    except VoltoolError:
        return []  # said by the config check
    if not found:
        return []
    names = ", ".join(sorted(found))
    try:
        image = agent_image.status(engine, config.busybox).image
        version = engine.image(image).labels.get(L.IMAGE_RESTIC) if image else None
    except EngineUnreachable:
        raise
    except VoltoolError:
        version = None
    if version:
        return [Check("remotes", "ok", f"{names}; the agent image carries restic {version}")]
    return [
        Check(
            "remotes",
            "warn",
            f"{names}; but the agent image carries no restic",
            "apt-get install restic, then voltool helper --build",
        )
    ]


def _state_check() -> Check:
    sdir = state_dir()
    try:
        sdir.mkdir(parents=True, exist_ok=True)
        writable = os.access(sdir, os.W_OK)
    except OSError:
        writable = False
    return Check(
        "state directory",
        "ok" if writable else "fail",
        str(sdir),
        None if writable else "set VOLTOOL_STATE_DIR to a writable directory",
    )


def _leftover_checks(rt: Runtime) -> list[Check]:
    """Leftovers of dead processes; without a helper image (`rt.image` ""), what can be
    found without one (snapshots are then looked at through their keepers only)."""
    checks: list[Check] = []
    left = find_leftovers(rt)
    for problem in rt.journal.problems:
        checks.append(Check("journal", "warn", problem))
    for f in left.frozen:
        done = "paused" if f.container.action == Mode.PAUSE else "stopped"
        checks.append(
            Check(
                "containers",
                "fail",
                f"container {f.container.name} was {done} by {f.op.kind} {f.op.id} "
                "and not brought back",
                "voltool recover",
            )
        )
    for f in left.elsewhere:
        done = "paused" if f.container.action == Mode.PAUSE else "stopped"
        who = f.op.owner.describe() if f.op.owner else "an unknown process"
        checks.append(
            Check(
                "containers",
                "warn",
                f"container {f.container.name} is {done} by {f.op.kind} {f.op.id} of {who}, "
                "which cannot be checked from here",
                f"if that process is gone: voltool recover --abandoned {f.op.id}",
            )
        )
    if rt.image:
        snapshots = catalog.list_snapshots(rt)
        old = sum(1 for s in snapshots if not s.in_store and s.state == "complete")
        if old:
            one = old == 1
            checks.append(
                Check(
                    "format",
                    "ok",
                    f"{old} snapshot{'' if one else 's'} in format 1, usable as "
                    f"{'it is' if one else 'they are'}; `voltool migrate --all` moves "
                    f"{'it into its store' if one else 'them into their stores'}",
                )
            )
        for s in snapshots:
            if s.state == "damaged":
                checks.append(
                    Check(
                        "snapshots",
                        "warn",
                        f"snapshot {s.id} of {quoted(s.source)} is damaged: {s.problem}",
                        f"voltool inspect {s.id}, then voltool delete {s.id} if it is not needed",
                    )
                )
    else:
        checks.append(
            Check(
                "snapshots",
                "warn",
                "not read without a usable helper image: damaged snapshots are not looked for, "
                "nor incomplete ones without a keeper",
            )
        )
    items = _leftover_items(left)
    for item in items:
        checks.append(Check("leftovers", "warn", item, "voltool recover"))
    if not items:
        checks.append(
            Check(
                "leftovers",
                "ok",
                "no interrupted operations, orphaned helpers, stale locks, "
                "incomplete or unprotected snapshots, or orphaned keepers",
            )
        )
    return checks


def _leftover_items(left: Leftovers) -> list[str]:
    return (
        [f"interrupted {op.kind} {op.id} on {', '.join(op.volumes)}" for op in left.interrupted]
        + [f"orphaned helper container {c.short_id}" for c in left.helpers]
        + [f"stale lock on {quoted(h.volume)} ({h.describe()})" for h in left.locks]
        + [f"incomplete snapshot {s.id} of {quoted(s.source)}" for s in left.incomplete]
        + [f"keeper {c.name} of a volume that is gone" for c in left.keepers]
        + [f"operation record {c.short_id} that does not read as one" for c in left.records]
        + [
            f"snapshot {s.id} of {quoted(s.source)} is not protected from docker volume prune"
            for s in left.unprotected
        ]
    )
