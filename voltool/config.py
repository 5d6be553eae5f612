"""Effective configuration: command line, VOLTOOL_* variables, the TOML file, defaults.

Every value remembers where it came from, so `voltool config show` can say so.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from voltool.errors import UsageError
from voltool.words import quoted

DEFAULT_HELPER_IMAGE = "busybox"
DEFAULT_BUSYBOX = "/bin/busybox"


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    kind: type
    help: str
    choices: tuple[Any, ...] = ()  # the values allowed, when not every one of `kind` is


SETTINGS: tuple[Setting, ...] = (
    Setting("host", None, str, "engine endpoint, like DOCKER_HOST (unix://, tcp://, ssh://)"),
    Setting("context", None, str, "Docker context to use instead of the current one"),
    Setting("helper_image", DEFAULT_HELPER_IMAGE, str, "image of the helper containers"),
    Setting("busybox", DEFAULT_BUSYBOX, str, "static busybox binary to build the helper from"),
    Setting("timeout", 600, int, "seconds to wait on one engine request"),
    Setting("stop_timeout", 10, int, "seconds a container gets to stop before it is killed"),
    Setting(
        "format",
        2,
        int,
        "format of new snapshots: 2 (a store per volume, incremental, copied by the agent) "
        "or 1 (a volume each, through the archive API)",
        choices=(2, 1),
    ),
)
_BY_NAME = {s.name: s for s in SETTINGS}


@dataclass(frozen=True)
class Config:
    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    file: Path | None = None
    tables: dict[str, Any] = field(default_factory=dict)  # the file's [tables], e.g. [prune]

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    @property
    def host(self) -> str | None:
        return self.values["host"]  # type: ignore[no-any-return]

    @property
    def context(self) -> str | None:
        return self.values["context"]  # type: ignore[no-any-return]

    @property
    def helper_image(self) -> str:
        return str(self.values["helper_image"])

    @property
    def busybox(self) -> str:
        return str(self.values["busybox"])

    @property
    def timeout(self) -> int:
        return int(self.values["timeout"])

    @property
    def stop_timeout(self) -> int:
        return int(self.values["stop_timeout"])

    @property
    def format(self) -> int:
        return int(self.values["format"])


def config_file_path() -> Path:
    explicit = os.environ.get("VOLTOOL_CONFIG")
    if explicit:
        return Path(explicit)
    return Path(platformdirs.user_config_dir("voltool")) / "config.toml"


def load(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Resolve every setting; raises UsageError for a malformed file or value."""
    problems: list[UsageError] = []
    config = _resolve(overrides, environ, problems.append, stop=True)
    if problems:
        raise problems[0]
    return config


def load_checked(
    overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None
) -> tuple[Config, list[str]]:
    """Resolve every setting, never raising: the configuration with the defaults in place
    of what is wrong, and every problem found, one line each (for `voltool doctor`)."""
    problems: list[UsageError] = []
    config = _resolve(overrides, environ, problems.append, stop=False)
    return config, [str(p) for p in problems]


def _resolve(
    overrides: dict[str, Any] | None,
    environ: dict[str, str] | None,
    problem: Callable[[UsageError], None],
    stop: bool,
) -> Config:
    """The configuration; each problem is passed to `problem`, and with `stop` the first
    one ends the resolution (what is returned then does not matter)."""
    env = os.environ if environ is None else environ
    path = config_file_path()
    try:
        from_file = _read_file(path)
    except UsageError as e:
        problem(e)
        if stop:
            return Config({})
        from_file = {}
    unknown = sorted(
        k for k in from_file if k not in _BY_NAME and not isinstance(from_file[k], dict)
    )
    if unknown:
        problem(UsageError(f"unknown setting(s) in {path}: {', '.join(unknown)}"))
        if stop:
            return Config({})
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in SETTINGS:
        cli_value = (overrides or {}).get(s.name)
        env_name = "VOLTOOL_" + s.name.upper()
        try:
            if cli_value is not None:
                values[s.name], sources[s.name] = cli_value, "command line"
            elif env.get(env_name):
                values[s.name], sources[s.name] = _coerce(s, env[env_name], env_name), env_name
            elif s.name in from_file:
                values[s.name] = _coerce(s, from_file[s.name], str(path))
                sources[s.name] = str(path)
            else:
                values[s.name], sources[s.name] = s.default, "default"
        except UsageError as e:
            problem(e)
            if stop:
                return Config({})
            values[s.name], sources[s.name] = s.default, "default (the value given is wrong)"
    tables = {k: v for k, v in from_file.items() if isinstance(v, dict)}
    unknown = sorted(set(tables) - {"prune", "remotes"})
    if unknown:
        problem(UsageError(f"unknown table(s) in {path}: {', '.join(unknown)}"))
    return Config(values, sources, path if path.exists() else None, tables)


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read configuration file {path}: {e}") from None


def _coerce(s: Setting, raw: Any, where: str) -> Any:
    if s.kind is int:
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise UsageError(
                f"{s.name} from {where} must be a whole number, not {quoted(raw)}"
            ) from None
        if value <= 0:
            raise UsageError(f"{s.name} from {where} must be positive, not {value}")
        if s.choices and value not in s.choices:
            allowed = " or ".join(str(c) for c in s.choices)
            raise UsageError(f"{s.name} from {where} must be {allowed}, not {value}")
        return value
    if not isinstance(raw, str) or not raw:
        raise UsageError(f"{s.name} from {where} must be a non-empty string")
    return raw
