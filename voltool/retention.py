"""Retention policies: which snapshots to keep, and the rule that keeps each one.

`apply_policy` is a pure function of the snapshots, the policy, the time now
and a time zone. Its rules follow restic's:

- `last N` keeps the N newest snapshots.
- `hourly/daily/weekly/monthly/yearly N` keep the newest snapshot of each of
  the N most recent hours, days, ISO weeks, months or years *that have a
  snapshot*. Periods without one do not count, so a missed run never makes
  the policy keep less.
- `within D` keeps every snapshot at most D older than the reference time:
  the earlier of now and the newest snapshot. So neither a clock stepped
  forward (now far ahead) nor a snapshot stamped in the future can push the
  reference past the real snapshots and make the policy keep less.
- Pinned snapshots are always kept.

Snapshots are ordered newest first by (created, id), so equal timestamps are
decided the same way every time.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields

from voltool.errors import UsageError

PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: dt.timedelta | None = None

    @property
    def empty(self) -> bool:
        return self.within is None and not any(
            getattr(self, f.name) for f in fields(self) if f.name != "within"
        )

    def describe(self) -> str:
        parts = [
            f"{f.name} {getattr(self, f.name)}"
            for f in fields(self)
            if f.name != "within" and getattr(self, f.name)
        ]
        if self.within is not None:
            parts.append(f"within {format_duration(self.within)}")
        return ", ".join(parts) or "nothing"

    @classmethod
    def from_mapping(cls, raw: dict[str, object], where: str) -> Policy:
        """A policy from `keep-daily = 7`-style keys (a config table, or options)."""
        values: dict[str, object] = {}
        for key, value in raw.items():
            name = key.removeprefix("keep-").removeprefix("keep_")
            if name == "within":
                values["within"] = parse_duration(str(value), where)
            elif name in ("last", *PERIODS):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise UsageError(f"{key} in {where} must be a whole number, not {value!r}")
                values[name] = value
            else:
                raise UsageError(f"unknown retention rule {key!r} in {where}")
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Item:
    id: str
    created: dt.datetime  # aware
    pinned: bool = False


@dataclass(frozen=True)
class Decision:
    id: str
    keep: bool
    reasons: tuple[str, ...]  # why it is kept; empty when it is removed


def _bucket(period: str, t: dt.datetime) -> str:
    if period == "hourly":
        return t.strftime("%Y-%m-%d %H:00")
    if period == "daily":
        return t.strftime("%Y-%m-%d")
    if period == "weekly":
        year, week, _ = t.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "monthly":
        return t.strftime("%Y-%m")
    return t.strftime("%Y")


def apply_policy(
    items: Iterable[Item], policy: Policy, now: dt.datetime, tz: dt.tzinfo
) -> list[Decision]:
    """Decide every item, newest first. Raises UsageError for an empty policy."""
    if policy.empty:
        raise UsageError("a retention policy needs at least one keep rule")
    ordered = sorted(items, key=lambda i: (i.created, i.id), reverse=True)
    reasons: dict[str, list[str]] = {i.id: [] for i in ordered}
    for i in ordered[: policy.last]:
        reasons[i.id].append(f"last {policy.last}")
    for period in PERIODS:
        count = getattr(policy, period)
        seen: list[str] = []
        for i in ordered:
            if len(seen) >= count:
                break
            bucket = _bucket(period, i.created.astimezone(tz))
            if bucket not in seen:
                seen.append(bucket)
                reasons[i.id].append(f"{period} {bucket}")
    if policy.within is not None and ordered:
        reference = min(now, ordered[0].created)
        for i in ordered:
            if i.created >= reference - policy.within:
                reasons[i.id].append(f"within {format_duration(policy.within)}")
    for i in ordered:
        if i.pinned:
            reasons[i.id].append("pinned")
    return [Decision(i.id, bool(reasons[i.id]), tuple(reasons[i.id])) for i in ordered]


_DURATION = re.compile(r"(\d+)([yMwdhm])")
_UNITS = {"y": 365 * 86400, "M": 30 * 86400, "w": 7 * 86400, "d": 86400, "h": 3600, "m": 60}


def parse_duration(text: str, where: str = "the command line") -> dt.timedelta:
    """`1y2M3w4d5h6m` (restic's units: y=365d, M=30d, w, d, h, m) as a timedelta."""
    if not text or _DURATION.sub("", text):
        raise UsageError(f"duration {text!r} in {where} is not like 7d, 2w, 1y6M or 36h")
    return dt.timedelta(seconds=sum(int(n) * _UNITS[u] for n, u in _DURATION.findall(text)))


def format_duration(d: dt.timedelta) -> str:
    seconds = int(d.total_seconds())
    out = []
    for unit in ("y", "M", "w", "d", "h", "m"):
        n, seconds = divmod(seconds, _UNITS[unit])
        if n:
            out.append(f"{n}{unit}")
    return "".join(out) or "0m"
