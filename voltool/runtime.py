"""What every operation needs, bundled: the engine, the helper image, the journal, the reporter."""

from __future__ import annotations

from dataclasses import dataclass

from voltool.config import Config
from voltool.engine import labels as L
from voltool.engine.client import Engine
from voltool.journal import FileRecords, Journal
from voltool.owner import Owner, current
from voltool.report import Reporter


@dataclass(frozen=True)
class Runtime:
    engine: Engine
    config: Config
    journal: Journal
    reporter: Reporter
    image: str  # the helper image, already present in the engine

    @property
    def owner(self) -> Owner:
        return current()

    def helper_labels(self, op: str) -> dict[str, str]:
        return L.managed(L.ROLE_HELPER, op, self.owner.token())


def connect_engine(config: Config) -> Engine:
    """Connect to the engine the configuration names (see voltool.engine.endpoint)."""
    from voltool.engine.endpoint import resolve

    return Engine.connect(resolve(config.host, config.context), config.timeout)


def open_runtime(config: Config, reporter: Reporter, engine: Engine | None = None) -> Runtime:
    """Connect, make sure the helper image is there, and open the journal."""
    from voltool.engine import helper_image

    engine = engine or connect_engine(config)
    image = helper_image.ensure(engine, config.helper_image, config.busybox, reporter)
    return Runtime(engine, config, open_journal(engine, image, reporter), reporter, image)


def open_journal(engine: Engine, image: str, reporter: Reporter) -> Journal:
    """The journal: records in the engine, logged to the state directory."""
    from voltool.engine.records import EngineRecords
    from voltool.state import journal_path

    return Journal(EngineRecords(engine, image), FileRecords(journal_path()), reporter.warn)
