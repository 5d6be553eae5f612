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
  reference past the real snapshots and make the policy keep less. D is in
  restic's units (`Duration`): `m` is months, never minutes.
- Pinned snapshots are always kept (reason `pinned`).
- Named snapshots are kept too (reason `named`), unless `include_named`: a
  name is given to a snapshot someone means to come back to.

Snapshots are ordered newest first by (created, id), so equal timestamps are
decided the same way every time.
"""

from __future__ import annotations

import calendar
import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass, fields

from voltool.errors import UsageError
from voltool.words import quoted

PERIODS = ("hourly", "daily", "weekly", "monthly", "yearly")


@dataclass(frozen=True)
class Policy:
    last: int = 0
    hourly: int = 0
    daily: int = 0
    weekly: int = 0
    monthly: int = 0
    yearly: int = 0
    within: Duration | None = None

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
                if not isinstance(value, str):
                    raise UsageError(
                        f'{key} in {where} must be a string like "7d", not {quoted(value)}'
                    )
                values["within"] = parse_duration(value, f"{key} in {where}")
            elif name in ("last", *PERIODS):
                if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                    raise UsageError(
                        f"{key} in {where} must be a whole number, not {quoted(value)}"
                    )
                values[name] = value
            else:
                raise UsageError(f"unknown retention rule {quoted(key)} in {where}")
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Item:
    id: str
    created: dt.datetime  # aware
    pinned: bool = False
    named: bool = False


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
    items: Iterable[Item],
    policy: Policy,
    now: dt.datetime,
    tz: dt.tzinfo,
    include_named: bool = False,
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
        cutoff = policy.within.before(min(now, ordered[0].created), tz)
        for i in ordered:
            if i.created >= cutoff:
                reasons[i.id].append(f"within {format_duration(policy.within)}")
    for i in ordered:
        if i.pinned:
            reasons[i.id].append("pinned")
        if i.named and not include_named:
            reasons[i.id].append("named")
    return [Decision(i.id, bool(reasons[i.id]), tuple(reasons[i.id])) for i in ordered]


_UNIT_WORDS = "y (years), m (months), w (weeks), d (days), h (hours)"
_DURATION = re.compile(r"(\d{1,6})([ymwdh])")


@dataclass(frozen=True)
class Duration:
    """A duration as restic reads it: calendar years, months and days, and hours.

    Years, months and days count back on the calendar (a month before 31 March
    is 28 or 29 February, the end of the shorter month, so that a short month
    never makes the policy keep less); hours count back in elapsed time.
    """

    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    def before(self, t: dt.datetime, tz: dt.tzinfo) -> dt.datetime:
        """The instant this long before `t`, the calendar read in time zone `tz`."""
        try:
            local = t.astimezone(tz)
            months = local.year * 12 + (local.month - 1) - (self.years * 12 + self.months)
            year, month = divmod(months, 12)
            day = min(local.day, calendar.monthrange(year, month + 1)[1])
            # Arithmetic on an aware datetime keeps its wall-clock time: calendar days.
            back = local.replace(year=year, month=month + 1, day=day) - dt.timedelta(days=self.days)
            return back.astimezone(dt.UTC) - dt.timedelta(hours=self.hours)
        except (OverflowError, ValueError):  # before year 1: everything is within
            return dt.datetime.min.replace(tzinfo=dt.UTC)


def parse_duration(text: str, where: str = "--keep-within") -> Duration:
    """`1y6m`, `2w3d`, `36h`: restic's units (y, m for months, d, h) and w for 7 days.

    Each unit at most once, in any order; anything else (`M`, minutes, spaces,
    signs) is a UsageError that names the units.
    """
    parts = _DURATION.findall(text) if isinstance(text, str) else []
    units = [u for _, u in parts]
    if not parts or _DURATION.sub("", text) or len(set(units)) != len(units):
        raise UsageError(
            f"{where}: {quoted(text)} is not a duration; use {_UNIT_WORDS}, each at most once, "
            "as in 36h, 7d, 2w, 6m or 1y6m"
        )
    n = {u: int(v) for v, u in parts}
    return Duration(
        years=n.get("y", 0),
        months=n.get("m", 0),
        days=n.get("d", 0) + 7 * n.get("w", 0),
        hours=n.get("h", 0),
    )


def format_duration(d: Duration) -> str:
    """`d` as parse_duration reads it back: `1y6m`, `2w3d`, `36h`."""
    weeks, days = divmod(d.days, 7)
    out = [
        f"{n}{u}"
        for n, u in ((d.years, "y"), (d.months, "m"), (weeks, "w"), (days, "d"), (d.hours, "h"))
        if n
    ]
    return "".join(out) or "0h"


def parse_moment(text: str, now: dt.datetime, tz: dt.tzinfo, where: str) -> dt.datetime:
    """An instant from an ISO date or date-time (`2026-01-31`, `2026-01-31T14:00`, with or
    without an offset; read in `tz` without one) or a duration back from `now` (`7d`, `36h`)."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        pass
    else:
        return when if when.tzinfo is not None else when.replace(tzinfo=tz)
    try:
        return parse_duration(text, where).before(now, tz)
    except UsageError:
        raise UsageError(
            f"{where}: {quoted(text)} is neither an ISO date or time "
            "(2026-01-31, 2026-01-31T14:00) "
            "nor a duration back from now (36h, 7d, 2w, 6m)"
        ) from None
