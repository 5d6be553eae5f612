"""Prune: plan which snapshots a retention policy removes, with the reason for each kept one.

Policies, per source volume:
- for `manual` and `import` snapshots: the keep options given on the command
  line; else the config file's `[prune.volumes.VOLUME]`; else its `[prune]`;
  else none (those snapshots are left alone);
- for `pre-restore` snapshots: the command line's options only with
  `--kind pre-restore`; else the config file's `[prune.pre-restore]`; else the
  default, `PRE_RESTORE_DEFAULT`.
With neither keep options nor a policy in the config file, prune refuses: it
never deletes by accident. Pinned and damaged snapshots are never removed;
named ones are kept too, unless `--include-named` lets the policy decide.
Incomplete ones (no snapshot.json) more than an hour old, whose creator is
gone, are removed.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from voltool.config import Config
from voltool.errors import UsageError, VoltoolError
from voltool.owner import Owner
from voltool.runtime import Runtime
from voltool.store import catalog, retention
from voltool.store.catalog import Snapshot
from voltool.store.retention import Duration, Item, Policy

PRE_RESTORE_DEFAULT = Policy(last=3, within=Duration(days=7))
INCOMPLETE_AFTER = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Policies:
    """Where each policy comes from: (policy, words saying where) or None."""

    cli: tuple[Policy, str] | None
    kind: str | None  # --kind
    for_all: tuple[Policy, str] | None
    per_volume: dict[str, tuple[Policy, str]]
    pre_restore: tuple[Policy, str]
    include_named: bool = False  # --include-named: named snapshots are the policy's too

    @property
    def any(self) -> bool:
        return self.cli is not None or self.for_all is not None or bool(self.per_volume)

    def regular(self, volume: str) -> tuple[Policy, str] | None:
        if self.cli and self.kind in (None, "manual", "import"):
            return self.cli
        return self.per_volume.get(volume) or self.for_all

    def for_pre_restore(self) -> tuple[Policy, str]:
        if self.cli and self.kind == "pre-restore":
            return self.cli
        return self.pre_restore


def policies(
    config: Config, cli: Policy | None, kind: str | None, include_named: bool = False
) -> Policies:
    table = dict(config.tables.get("prune", {}))
    where = str(config.file or "the config file")
    per_volume_raw = table.pop("volumes", {})
    pre_raw = table.pop("pre-restore", None)
    for_all = _from_table(table, f"[prune] in {where}") if table else None
    per_volume = {
        v: _from_table(dict(t), f"[prune.volumes.{v}] in {where}")
        for v, t in dict(per_volume_raw).items()
    }
    pre = (
        _from_table(dict(pre_raw), f"[prune.pre-restore] in {where}")
        if pre_raw
        else (PRE_RESTORE_DEFAULT, "the default for pre-restore snapshots")
    )
    return Policies(
        (cli, "the command line") if cli and not cli.empty else None,
        kind,
        for_all,
        per_volume,
        pre,
        include_named,
    )


def _from_table(raw: dict[str, object], where: str) -> tuple[Policy, str]:
    return Policy.from_mapping(raw, where), where


@dataclass(frozen=True)
class PruneItem:
    snapshot: Snapshot
    remove: bool
    reasons: tuple[str, ...]  # why kept (or why removed, for incomplete ones)
    policy: str  # the policy applied and where it came from


def require_policy(ps: Policies) -> None:
    """UsageError unless some policy is given: prune never deletes by accident."""
    if not ps.any:
        raise UsageError(
            "prune needs a policy: give keep options (--keep-daily 7, ...) "
            "or a [prune] table in the config file"
        )


def plan(
    rt: Runtime, ps: Policies, volumes: list[str], now: dt.datetime, tz: dt.tzinfo
) -> list[PruneItem]:
    """What prune would do, volume by volume, oldest first; changes nothing."""
    require_policy(ps)
    return plan_of(catalog.list_snapshots(rt), ps, volumes, now, tz)


def plan_of(
    listed: list[Snapshot],
    ps: Policies,
    volumes: list[str],
    now: dt.datetime,
    tz: dt.tzinfo,
) -> list[PruneItem]:
    """`plan` of the snapshots `listed` (local ones, or a remote's: voltool.ops.remote)."""
    require_policy(ps)
    snaps = [s for s in listed if not volumes or s.source in volumes]
    if ps.kind:
        snaps = [s for s in snaps if s.kind == ps.kind]
    out: list[PruneItem] = []
    for source in sorted({s.source for s in snaps}):
        mine = [s for s in snaps if s.source == source]
        groups = [
            ([s for s in mine if s.kind != "pre-restore"], ps.regular(source)),
            ([s for s in mine if s.kind == "pre-restore"], ps.for_pre_restore()),
        ]
        for group, chosen in groups:
            out += _decide(group, chosen, now, tz, ps.include_named)
    return sorted(out, key=lambda i: (i.snapshot.source, i.snapshot.created, i.snapshot.id))


def _decide(
    group: list[Snapshot],
    chosen: tuple[Policy, str] | None,
    now: dt.datetime,
    tz: dt.tzinfo,
    include_named: bool = False,
) -> list[PruneItem]:
    out: list[PruneItem] = []
    complete = [s for s in group if s.state == "complete"]
    for s in group:
        if s.state == "damaged":
            out.append(PruneItem(s, False, ("damaged: never removed by prune",), ""))
        elif s.state == "incomplete":
            owner = Owner.parse(s.owner)
            stale = now - s.created > INCOMPLETE_AFTER and (owner is None or not owner.is_alive())
            why = "incomplete for over an hour" if stale else "incomplete, may still be in progress"
            out.append(PruneItem(s, stale, (why,), ""))
    if chosen is None:
        out += [PruneItem(s, False, ("no policy for it",), "") for s in complete]
        return out
    policy, where = chosen
    by_id = {s.id: s for s in complete}
    items = [Item(s.id, s.created, s.pinned, s.name is not None) for s in complete]
    label = f"{policy.describe()} (from {where})"
    decisions = retention.apply_policy(items, policy, now, tz, include_named) if items else []
    for d in decisions:
        out.append(PruneItem(by_id[d.id], not d.keep, d.reasons, label))
    return out


@dataclass(frozen=True)
class PruneResult:
    removed: tuple[str, ...]
    failed: tuple[str, ...]  # one line each: the snapshot and why


def execute(rt: Runtime, items: list[PruneItem]) -> PruneResult:
    """Remove what the plan says, each under its lock; one that fails does not stop the rest."""
    removed: list[str] = []
    failed: list[str] = []
    for item in items:
        if item.remove:
            try:
                catalog.delete(rt, item.snapshot, force=False)
                removed.append(item.snapshot.id)
            except VoltoolError as e:
                failed.append(f"{item.snapshot.id}: {e}")
    return PruneResult(tuple(removed), tuple(failed))
