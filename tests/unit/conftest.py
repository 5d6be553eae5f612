from __future__ import annotations

import pytest

from tests.agenttools import Agent


@pytest.fixture(scope="session")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Agent:
    """The agent, copied alone under another package name, run as a subprocess."""
    return Agent(tmp_path_factory.mktemp("agent-package"))
