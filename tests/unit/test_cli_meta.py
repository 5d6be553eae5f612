"""Every command has help and a README section; every exit code is in the README's table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voltool.cli.app import app, run
from voltool.errors import ExitCode

README = (Path(__file__).parents[2] / "README.md").read_text()
COMMANDS = [
    c.name or (c.callback.__name__ if c.callback else "")
    for c in app.registered_commands
    if not c.hidden
]
# Hidden aliases (`rm` for `delete`): another name for a command that has its section.
ALIASES = [
    (c.name, [o.name for o in app.registered_commands if o.callback is c.callback and not o.hidden])
    for c in app.registered_commands
    if c.hidden
]


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


@pytest.mark.parametrize(("alias", "of"), ALIASES)
def test_alias_is_documented(alias: str, of: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert len(of) == 1, f"hidden command {alias} is an alias of no visible command"
    assert run([alias, "--help"]) == 0
    assert f"voltool {alias}" in capsys.readouterr().out
    section = README.split(f"### `voltool {of[0]}`")[1].split("\n### ")[0]
    assert f"voltool {alias}" in section, f"README's {of[0]} section does not name {alias}"


@pytest.mark.parametrize("code", list(ExitCode))
def test_exit_code_is_documented(code: ExitCode) -> None:
    assert re.search(rf"^\| {int(code)} \|", README, re.M), f"exit code {int(code)} not in README"
