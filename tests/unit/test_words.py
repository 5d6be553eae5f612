"""Values in messages read as a person writes them, never as Python does."""

from __future__ import annotations

import pytest

from voltool.words import quoted


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("pgdata", "'pgdata'"),
        ("it's", "'it's'"),  # Python would switch to double quotes
        ("a\nb\tc\x1b[31m", "'a\\nb\\tc\\x1b[31m'"),  # no terminal escape gets through
        ("caf\u00e9", "'caf\u00e9'"),
        (b"ok\xff", "'ok\\xff'"),  # bytes: decoded, what does not decode escaped
        (None, "(none)"),
        (["a", "b"], "'a', 'b'"),
        ([], "(none)"),
        (True, "yes"),
        (3, "3"),
        ("3", "'3'"),
    ],
)
def test_quoted(value: object, shown: str) -> None:
    assert quoted(value) == shown


def test_no_message_in_the_library_uses_python_reprs() -> None:
    """Every value in a message goes through `quoted`, not `!r` (None, b'', [...], True)."""
    from pathlib import Path

    import voltool

    root = Path(voltool.__file__).parent
    offenders = [
        f"{p.relative_to(root)}:{n}"
        for p in sorted(root.rglob("*.py"))
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if "!r}" in line
    ]
    assert offenders == []
