"""The retention policy against golden cases worked out by hand (golden/retention.json)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from voltool.errors import UsageError
from voltool.store.retention import (
    Duration,
    Item,
    Policy,
    apply_policy,
    format_duration,
    parse_duration,
)

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "golden" / "retention.json").read_text()
)


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_there_are_enough_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden(case: dict[str, Any]) -> None:
    # A snapshot: [id, created, pinned?, named?]
    items = [
        Item(s[0], at(s[1]), len(s) > 2 and s[2], len(s) > 3 and s[3]) for s in case["snapshots"]
    ]
    decisions = apply_policy(
        items,
        Policy.from_mapping(case["policy"], "a test"),
        at(case["now"]),
        ZoneInfo(case.get("tz", "UTC")),
        include_named=case.get("include_named", False),
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
    ("text", "duration"),
    [
        ("7d", Duration(days=7)),
        ("36h", Duration(hours=36)),
        ("6m", Duration(months=6)),
        ("1y6m", Duration(years=1, months=6)),
        ("6m1y", Duration(years=1, months=6)),
        ("2w3d", Duration(days=17)),
        ("1y2m3w4d5h", Duration(1, 2, 25, 5)),
        ("0d", Duration()),
    ],
)
def test_durations(text: str, duration: Duration) -> None:
    assert parse_duration(text) == duration
    assert parse_duration(format_duration(duration)) == duration


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7",
        "7 days",
        "-1d",
        "1x",
        "6M",
        "1y6M",
        "30min",
        "90s",
        "1d1d",
        "7D",
        "1.5d",
        "1234567d",
    ],
)
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError, match=r"--keep-within: .* y \(years\), m \(months\)"):
        parse_duration(text)


def test_far_back_keeps_everything() -> None:
    start = at("0001-02-01T00:00:00Z")
    assert Duration(years=999999).before(at("2026-01-01T00:00:00Z"), dt.UTC) <= start


def test_a_bad_keep_within_names_the_key_and_where() -> None:
    with pytest.raises(UsageError, match=r"^keep-within in \[prune\] in cfg.toml: '6M' is not"):
        Policy.from_mapping({"keep-within": "6M"}, "[prune] in cfg.toml")
    with pytest.raises(UsageError, match=r"^keep-within in cfg.toml must be a string"):
        Policy.from_mapping({"keep-within": 7}, "cfg.toml")


@pytest.mark.parametrize(
    "raw", [{"keep-daily": -1}, {"keep-daily": "7"}, {"keep-sometimes": 1}, {"keep-within": "soon"}]
)
def test_bad_policies(raw: dict[str, object]) -> None:
    with pytest.raises(UsageError):
        Policy.from_mapping(raw, "config.toml")


def test_a_bad_keep_within_in_the_config_file_names_the_file_and_table() -> None:
    from voltool.config import Config
    from voltool.ops.prune import policies

    cfg = Config(
        {}, file=Path("/etc/v.toml"), tables={"prune": {"volumes": {"pg": {"keep-within": "1y6M"}}}}
    )
    with pytest.raises(UsageError) as e:
        policies(cfg, None, None)
    assert str(e.value).startswith(
        "keep-within in [prune.volumes.pg] in /etc/v.toml: '1y6M' is not"
    )
    assert "m (months)" in str(e.value)
