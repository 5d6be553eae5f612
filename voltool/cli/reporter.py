"""The CLI's Reporter: notes and warnings on stderr, a progress bar for long transfers."""

from __future__ import annotations

import time
from typing import Any

from voltool.cli.render import err
from voltool.report import Reporter

# A transfer shorter than this shows no bar at all: no flicker for tiny volumes.
_SHOW_AFTER = 0.5


class ConsoleReporter(Reporter):
    def __init__(self, quiet: bool = False) -> None:
        self._quiet = quiet
        self._bars = not quiet and err.is_terminal  # asked once: it reads the environment
        self._progress: Any = None  # a rich Progress, made when a bar is first shown
        self._task: Any = None
        self._label = ""
        self._total: int | None = None
        self._done = 0
        self._started = 0.0

    def note(self, message: str) -> None:
        if not self._quiet:
            err.print(f"voltool: {message}", markup=False)

    def warn(self, message: str) -> None:
        err.print(f"voltool: warning: {message}", markup=False)

    def begin(self, label: str, total: int | None) -> None:
        self._label, self._total, self._done = label, total, 0
        self._started = time.monotonic()

    def advance(self, nbytes: int) -> None:
        self._done += nbytes
        if self._progress is None:
            if not self._bars or time.monotonic() - self._started < _SHOW_AFTER:
                return
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeElapsedColumn(),
                console=err,
                transient=True,
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self._label, total=self._total, completed=self._done
            )
            return
        assert self._task is not None
        self._progress.update(self._task, completed=self._done)

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = None
        self._task = None
