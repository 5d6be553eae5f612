from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own journal and no user configuration."""
    state = tmp_path / "state"
    monkeypatch.setenv("VOLTOOL_STATE_DIR", str(state))
    monkeypatch.setenv("VOLTOOL_CONFIG", str(tmp_path / "no-config.toml"))
    for var in (
        "VOLTOOL_HOST",
        "VOLTOOL_CONTEXT",
        "VOLTOOL_HELPER_IMAGE",
        "VOLTOOL_FORMAT",
        "VOLTOOL_TEST_HOLD_AT",
    ):
        monkeypatch.delenv(var, raising=False)
    return state
