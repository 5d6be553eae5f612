"""The retention policy against golden cases worked out by hand (golden/retention.json)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from voltool.errors import UsageError
from voltool.retention import Item, Policy, apply_policy, format_duration, parse_duration

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "golden" / "retention.json").read_text()
)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden(case: dict[str, Any]) -> None:
    items = [Item(s[0], at(s[1]), len(s) > 2 and s[2]) for s in case["snapshots"]]
    decisions = apply_policy(
        items,
        Policy.from_mapping(case["policy"], "a test"),
        at(case["now"]),
        ZoneInfo(case.get("tz", "UTC")),
    )
    kept = {d.id: list(d.reasons) for d in decisions if d.keep}
    assert kept == case["keep"]
    removed = {d.id for d in decisions if not d.keep}
    assert removed == {s[0] for s in case["snapshots"]} - set(case["keep"])
    assert all(not d.reasons for d in decisions if not d.keep)


def test_an_empty_policy_is_refused() -> None:
    with pytest.raises(UsageError, match="at least one keep rule"):
        apply_policy([], Policy(), at("2026-01-01T00:00:00Z"), dt.UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("7d", 7 * 86400),
        ("36h", 36 * 3600),
        ("1y6M", 365 * 86400 + 180 * 86400),
        ("2w3d", 17 * 86400),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text).total_seconds() == seconds
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


@pytest.mark.parametrize("text", ["", "7", "7 days", "-1d", "1x"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        parse_duration(text)


@pytest.mark.parametrize(
    "raw", [{"keep-daily": -1}, {"keep-daily": "7"}, {"keep-sometimes": 1}, {"keep-within": "soon"}]
)
def test_bad_policies(raw: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Policy.from_mapping(raw, "config.toml")
