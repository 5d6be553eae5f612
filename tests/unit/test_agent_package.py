"""The agent package stands alone: standard library and relative imports only."""

from __future__ import annotations

import ast
import subprocess
import sys

from tests.agenttools import AGENT_SOURCE, Agent


def test_imports_are_relative_or_standard_library() -> None:
    modules = sorted(AGENT_SOURCE.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "__main__.py"}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    top = (node.module or "").split(".")[0]
                    assert top == "__future__" or top in sys.stdlib_module_names, (module, top)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    top = alias.name.split(".")[0]
                    assert top in sys.stdlib_module_names, (module.name, alias.name)


def test_the_copy_runs_where_voltool_cannot_be_imported(agent: Agent) -> None:
    probe = subprocess.run(
        [sys.executable, "-I", "-S", "-c", "import voltool"], capture_output=True, check=False
    )
    assert probe.returncode != 0  # so the agent runs below without any of voltool
    run = agent("scan", agent.parent / "vtagent_copy")
    assert run.rc == 0 and run.summary["entries"] > 10
