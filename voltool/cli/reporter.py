"""The CLI's Reporter: notes and warnings on stderr, progress bars and spinners on a terminal.

Bars and spinners are drawn only when stderr is a terminal that can take them
(not TERM=dumb) and --quiet (or --json) was not given; they are transient: once
a transfer ends its bar is gone, and only the command's own lines stay.
Colours follow rich, which honours NO_COLOR.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from rich.console import Console

from voltool.cli.render import err
from voltool.report import Reporter

# A transfer shorter than this shows no bar at all: no flicker for tiny volumes.
_SHOW_AFTER = 0.5


def can_draw(console: Console, quiet: bool) -> bool:
    """Whether bars and spinners go to `console`: a terminal, not dumb, not --quiet."""
    return not quiet and console.is_terminal and os.environ.get("TERM") != "dumb"


class ConsoleReporter(Reporter):
    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self._console = console or err
        self._quiet = quiet
        self._bars = can_draw(self._console, quiet)  # asked once: it reads the environment
        self._progress: Any = None  # a rich Progress, made when a bar is first shown
        self._task: Any = None
        self._spinner: Any = None  # a rich Status, while status() says something
        self._label = ""
        self._total: int | None = None
        self._done = 0
        self._started = 0.0
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()  # the timer's thread shows the bar; end() may race it

    def note(self, message: str) -> None:
        if not self._quiet:
            self._console.print(f"voltool: {message}", markup=False)

    def warn(self, message: str) -> None:
        self._console.print(f"voltool: warning: {message}", markup=False)

    def status(self, message: str | None) -> None:
        if not self._bars:
            return
        if message is None:
            self._stop_spinner()
        elif self._spinner is None:
            self._spinner = self._console.status(f"{message}...")
            self._spinner.start()
        else:
            self._spinner.update(f"{message}...")

    def _stop_spinner(self) -> None:
        if self._spinner is not None:
            self._spinner.stop()
        self._spinner = None

    def begin(self, label: str, total: int | None) -> None:
        self._label, self._total, self._done = label, total, 0
        self._started = time.monotonic()
        if self._bars:
            # Shown after a while even if no byte comes meanwhile (a stalled engine).
            self._timer = threading.Timer(_SHOW_AFTER, self._show)
            self._timer.daemon = True
            self._timer.start()

    def _show(self) -> None:
        with self._lock:
            if self._progress is not None or self._timer is None:
                return
            self._stop_spinner()  # one live display at a time
            progress = self._make_progress(self._total is not None)
            progress.start()
            self._task = progress.add_task(self._label, total=self._total, completed=self._done)
            self._progress = progress  # last: advance() uses it, maybe from another thread

    def advance(self, nbytes: int) -> None:
        self._done += nbytes
        if self._progress is None:
            if self._bars and time.monotonic() - self._started >= _SHOW_AFTER:
                self._show()
            return
        self._progress.update(self._task, completed=self._done)

    def _make_progress(self, known: bool) -> Any:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        if known:  # bytes of a total: how far, how fast, how long still
            columns: list[Any] = [
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                TextColumn("left"),
            ]
        else:  # no total to hold them to: bytes, rate and time so far
            columns = [
                TextColumn("{task.description}"),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
            ]
        return Progress(*columns, console=self._console, transient=True)

    def end(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = None
            if self._progress is not None:
                self._progress.stop()
            self._progress = None
            self._task = None
