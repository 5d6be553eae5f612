"""Shell completion of volume names and snapshot ids and names, asked of the engine.

Completion runs inside the user's shell at every TAB: it must answer quickly
and never print anything but candidates. Whatever goes wrong (no engine, a bad
configuration, an engine that is slow) yields no candidates at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voltool.config import Config
    from voltool.engine.client import Engine

# Seconds an engine request may take while the user waits at a TAB.
_TIMEOUT = 3


@contextlib.contextmanager
def _engine(ctx: Any) -> Iterator[tuple[Engine, Config]]:
    """The engine the command line names (--host, --context), as the command would use it."""
    from voltool import config
    from voltool.runtime import connect_engine

    params = ctx.find_root().params if ctx is not None else {}
    overrides = {k: params.get(k) for k in ("host", "context", "helper_image")}
    cfg = config.load({**overrides, "timeout": _TIMEOUT})
    engine = connect_engine(cfg)
    try:
        yield engine, cfg
    finally:
        engine.close()


def _quietly(find: Callable[[Any], list[str]]) -> Callable[[Any, str], list[str]]:
    """`find`'s candidates that start with what was typed; none if anything fails."""

    def complete(ctx: Any, incomplete: str) -> list[str]:
        try:
            return sorted({c for c in find(ctx) if c.startswith(incomplete)})
        except (Exception, KeyboardInterrupt):  # a TAB must never show a traceback
            return []

    return complete


def _volume_names(ctx: Any) -> list[str]:
    from voltool.engine import labels as L
    from voltool.ids import SNAPSHOT_VOLUME_PREFIX

    with _engine(ctx) as (engine, _):
        return [
            v.name
            for v in engine.volumes()
            if v.labels.get(L.MANAGED) != "true" and not v.name.startswith(SNAPSHOT_VOLUME_PREFIX)
        ]


def _snapshot_refs(ctx: Any) -> list[str]:
    """Snapshot ids from the volumes' labels; their names too where the helper image is
    present already (names live in meta.json: reading them takes a helper, never a build)."""
    from voltool.engine import helper_image
    from voltool.report import Reporter
    from voltool.runtime import Runtime, open_journal
    from voltool.store import catalog

    with _engine(ctx) as (engine, cfg):
        image = helper_image.status(engine, cfg.helper_image, cfg.busybox).image or ""
        quiet = Reporter()
        rt = Runtime(engine, cfg, open_journal(engine, image, quiet), quiet, image)
        found = catalog.find(rt)
        refs = [s.id for s in found]
        if image and found:
            refs += [s.name for s in catalog.completed(rt, found) if s.name]
        return refs


volumes = _quietly(_volume_names)
snapshots = _quietly(_snapshot_refs)
