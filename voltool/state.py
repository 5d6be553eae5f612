"""Where voltool keeps its local state (the journal)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def state_dir() -> Path:
    """The state directory: $VOLTOOL_STATE_DIR, else the platform's user state directory."""
    explicit = os.environ.get("VOLTOOL_STATE_DIR")
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_state_dir("voltool"))


def journal_path() -> Path:
    return state_dir() / "journal.jsonl"
