"""Every command has help and a README section; every exit code is in the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voltool.cli.app import app, run
from voltool.errors import ExitCode

README = (Path(__file__).parents[2] / "README.md").read_text()
COMMANDS = [c.name or (c.callback.__name__ if c.callback else "") for c in app.registered_commands]


def test_there_are_commands() -> None:
    assert {"snapshot", "list", "inspect", "delete", "doctor", "helper", "recover"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_help_and_readme_section(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([name, "--help"]) == 0
    text = capsys.readouterr().out
    assert f"voltool {name}" in text
    first = text.split("Options")[0]
    assert len(first.split()) > 6, f"{name} has no help text"
    assert re.search(rf"^### `voltool {name}\b", README, re.M), f"README has no section for {name}"


@pytest.mark.parametrize("code", list(ExitCode))
def test_exit_code_is_documented(code: ExitCode) -> None:
    assert re.search(rf"^\| {int(code)} \|", README, re.M), f"exit code {int(code)} not in README"
