"""Progress bars and spinners, what was done to containers, -h, and `config` alone."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from voltool.cli import reporter as reporter_module
from voltool.cli.app import run
from voltool.cli.render import held_lines, held_records
from voltool.cli.reporter import ConsoleReporter
from voltool.engine.quiesce import Held


def _terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=120, color_system=None), buf


def _transfer(r: ConsoleReporter, total: int | None) -> None:
    r.begin("staging vol", total)
    r.advance(1024)
    time.sleep(0.01)
    r.advance(1024)  # the bar is shown from here (after _SHOW_AFTER, set to 0 below)
    r.advance(2048)
    r.end()


@pytest.fixture(autouse=True)
def _no_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reporter_module, "_SHOW_AFTER", 0.0)
    monkeypatch.delenv("TERM", raising=False)


def test_bar_with_a_total_shows_percentage_and_time_left() -> None:
    console, buf = _terminal()
    _transfer(ConsoleReporter(console=console), 8192)
    text = buf.getvalue()
    assert "staging vol" in text and "%" in text and "left" in text and "KiB" in text


def test_bar_without_a_total_shows_bytes_and_rate() -> None:
    console, buf = _terminal()
    _transfer(ConsoleReporter(console=console), None)
    text = buf.getvalue()
    assert "staging vol" in text and "/s" in text and "%" not in text


@pytest.mark.parametrize("how", ["quiet", "dumb", "pipe"])
def test_no_bar(how: str, monkeypatch: pytest.MonkeyPatch) -> None:
    console, buf = _terminal()
    if how == "dumb":
        monkeypatch.setenv("TERM", "dumb")
    if how == "pipe":
        console = Console(file=buf, force_terminal=False)
    r = ConsoleReporter(quiet=how == "quiet", console=console)
    r.status("reading the manifest")
    _transfer(r, 8192)
    r.status(None)
    assert buf.getvalue() == ""


def test_spinner_says_what_is_computed() -> None:
    console, buf = _terminal()
    r = ConsoleReporter(console=console)
    r.status("reading the manifest of snapshot 0123456789abcdef")
    time.sleep(0.2)
    r.status(None)
    assert "reading the manifest of snapshot 0123456789abcdef..." in buf.getvalue()


def test_held_lines_and_records() -> None:
    held = [Held("db", "pause", 0.812), Held("web", "pause", 0.79), Held("job", "stop", 0.61)]
    assert held_lines(held) == ["paused db, web for 0.8 s", "stopped job for 0.6 s"]
    assert held_records(held) == [
        {"name": "db", "paused_s": 0.812},
        {"name": "web", "paused_s": 0.79},
        {"name": "job", "stopped_s": 0.61},
    ]
    assert held_lines([]) == []


def test_config_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["config"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("Usage: voltool config [OPTIONS] COMMAND [ARGS]...")
    assert "show  Print every setting" in text


@pytest.mark.parametrize("args", [["-h"], ["restore", "-h"], ["config", "show", "-h"]])
def test_h_is_help(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert run(args) == 0
    assert "-h, --help" in capsys.readouterr().out


def test_stop_timeout_goes_with_stop(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["snapshot", "--stop-timeout", "3", "vol"]) == 2
    assert capsys.readouterr().err == "voltool: error: --stop-timeout goes with --stop\n"


def test_completion_options_exist(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--help"]) == 0
    text = capsys.readouterr().out
    assert "--install-completion" in text and "--show-completion" in text and "--quiet" in text
