"""Remotes: restic repositories named in the config file, and the secrets that open them.

    [remotes.offsite]
    repo = "rest:https://backup.example.com/pg"   # or s3:..., b2:..., azure:..., swift:..., /path
    password_file = "/root/.config/voltool/offsite.pass"   # or password_command = "pass show x"
    env_file = "/root/.config/voltool/offsite.env"         # optional: AWS_ACCESS_KEY_ID=... lines
    network = "host"                                       # optional: the helper's network

A repository path (`/path`, or `local:/path`) is a directory of the engine's
host, bind-mounted into the helper that runs restic; any other repository is
reached over the network the helper joins (by default the engine host's own,
`host`, so that what the host reaches, restic reaches).

Secrets are read here, on voltool's side, only when a command needs them, and
handed to restic's helper as files (voltool.engine.restic): never in an
argument, a label, an environment that `docker inspect` shows, or a message.
`redact` is what every message passes through on its way out.

`add` and `remove` edit the config file as text, a table at a time, and check
what they wrote by reading it back: everything else in the file is left as it
was, comments included.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voltool.config import Config
from voltool.errors import FileError, NotFound, UsageError
from voltool.words import quoted

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
# Backends restic reaches with nothing but its own binary and environment variables.
# sftp: and rclone: run another program (ssh, rclone), gs: reads a credentials file: the
# agent image has neither, so they are refused rather than failing later.
_BACKENDS = ("s3", "rest", "b2", "azure", "swift")
_NEEDS_MORE = ("sftp", "rclone", "gs")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")  # a backend's settings are upper case
# voltool passes these itself, or the helper's shell and loader live by them.
_RESERVED_ENV = re.compile(r"^(RESTIC_(PASSWORD|REPOSITORY)|PATH$|IFS$|HOME$|LD_|ENV$)")
_FIELDS = ("repo", "password_file", "password_command", "env_file", "network")
PASSWORD_COMMAND_TIMEOUT = 60
MAX_SECRET_FILE = 64 * 1024


@dataclass(frozen=True)
class Remote:
    """One `[remotes.NAME]` table, checked."""

    name: str
    repo: str
    password_file: str | None = None
    password_command: str | None = None
    env_file: str | None = None
    network: str | None = None  # None: "none" for a path, "host" for anything else

    @property
    def path(self) -> str | None:
        """The repository's directory on the engine's host, for a local repository."""
        if self.repo.startswith("local:"):
            return self.repo.removeprefix("local:")
        return self.repo if self.repo.startswith("/") else None

    @property
    def helper_network(self) -> str:
        if self.network:
            return self.network
        return "none" if self.path else "host"

    @property
    def shown(self) -> str:
        """The repository as it may be shown: a password in its URL is left out."""
        if not url_password(self.repo):
            return self.repo
        head, _, rest = self.repo.partition("://")
        authority, slash, path = rest.partition("/")
        userinfo, _, host = authority.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        shown_user = f"{user}:***" if colon else "***"
        return f"{head}://{shown_user}@{host}{slash}{path}"

    def check(self) -> None:
        """Raise UsageError if the table cannot name a repository and its password."""
        where = f"remote {quoted(self.name)}"
        if not NAME.fullmatch(self.name):
            raise UsageError(
                f"invalid remote name {quoted(self.name)}: up to 64 letters, digits, _ and -"
            )
        if not isinstance(self.repo, str) or not self.repo:
            raise UsageError(f"{where} has no repo")
        path = self.path
        if path is not None:
            if not path.startswith("/") or "\n" in path or ":" in path:
                raise UsageError(f"{where}: a repository path must be absolute, like /srv/backup")
        elif self.repo.partition(":")[0] in _NEEDS_MORE:
            raise UsageError(
                f"{where}: {self.repo.partition(':')[0]}: repositories need a program or a "
                "credentials file the agent image does not carry: serve the repository "
                "with `rclone serve restic` or restic's rest-server, and use rest:"
            )
        elif "://" in self.repo and (
            "@" in self.repo.partition("://")[2].partition("/")[2]
            or any(c in self.repo for c in "?#")
        ):
            raise UsageError(
                f"{where}: an @, ? or # in the repository URL's path: percent-encode it "
                "(%40, %3F, %23), so that no part of a password can be taken for the path"
            )
        elif self.repo.partition(":")[0] not in _BACKENDS or "\n" in self.repo:
            raise UsageError(
                f"{where}: repo must be a path (/srv/backup) or one of "
                f"{', '.join(b + ':...' for b in _BACKENDS)}"
            )
        if (self.password_file is None) == (self.password_command is None):
            raise UsageError(f"{where} needs one of password_file and password_command")
        for key in ("password_file", "password_command", "env_file", "network"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value):
                raise UsageError(f"{where}: {key} must be a non-empty string")
        network = self.network
        if network is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", network):
            raise UsageError(f"{where}: network must name a Docker network, like host")

    def table(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in _FIELDS if getattr(self, k) is not None}


def url_password(repo: str) -> str:
    """The secret in a repository URL's user information: the password
    (rest:https://user:PASS@host/), or a user given alone (rest:https://TOKEN@host/), or
    "". The user information ends at the authority's last "@", as Go's URL parser has it
    (`Remote.check` refuses an "@", "?" or "#" elsewhere in the URL)."""
    _, sep, rest = repo.partition("://")
    if not sep:
        return ""
    authority = rest.partition("/")[0]
    userinfo, at, _ = authority.rpartition("@")
    if not at:
        return ""
    user, colon, password = userinfo.partition(":")
    return password if colon else user


def from_config(config: Config) -> dict[str, Remote]:
    """Every remote the config file names, checked; UsageError for a malformed one."""
    raw = config.tables.get("remotes", {})
    where = str(config.file or "the config file")
    remotes: dict[str, Remote] = {}
    for name, table in dict(raw).items():
        remotes[name] = _parse(name, table, where)
    return remotes


def get(config: Config, name: str) -> Remote:
    remotes = from_config(config)
    if name not in remotes:
        known = f"; known: {', '.join(sorted(remotes))}" if remotes else ""
        raise NotFound(f"no remote {quoted(name)} in the config file{known}")
    return remotes[name]


def _parse(name: str, table: Any, where: str) -> Remote:
    if not isinstance(table, dict):
        raise UsageError(f"[remotes.{name}] in {where} is not a table")
    unknown = sorted(set(table) - set(_FIELDS))
    if unknown:
        raise UsageError(f"[remotes.{name}] in {where}: unknown key(s) {', '.join(unknown)}")
    remote = Remote(name, **{k: table[k] for k in _FIELDS if k in table})
    remote.check()
    return remote


# -- secrets ---------------------------------------------------------------


@dataclass(frozen=True)
class Secrets:
    """What opens a remote: never printed, passed to restic as files."""

    password: bytes
    env: tuple[tuple[str, str], ...] = ()
    in_repo: str = ""  # a password in the repository's URL (rest:https://user:PASSWORD@...)

    def values(self) -> list[str]:
        """Every secret value, to keep out of messages (`redact`)."""
        found = [self.password.decode(errors="replace"), self.in_repo]
        found += [v for _, v in self.env if len(v) >= 4]
        return [v for v in found if v]

    def env_script(self) -> bytes:
        """The env file as the helper's shell reads it: `export NAME='value'` lines."""
        return "".join(f"export {k}={shlex.quote(v)}\n" for k, v in self.env).encode()


def secrets(remote: Remote) -> Secrets:
    """Read `remote`'s password (and env file); FileError if one cannot be read."""
    if remote.password_file is not None:
        raw = _read_secret_file(remote.password_file, f"password file of remote {remote.name}")
        password = raw.rstrip(b"\r\n")
    else:
        assert remote.password_command is not None
        password = _run_password_command(remote)
    if not password.strip():
        raise FileError(f"the password of remote {quoted(remote.name)} is empty")
    if b"\n" in password or b"\0" in password:
        raise FileError(f"the password of remote {quoted(remote.name)} is more than one line")
    env: tuple[tuple[str, str], ...] = ()
    if remote.env_file is not None:
        text = _read_secret_file(remote.env_file, f"env file of remote {remote.name}")
        env = parse_env(text.decode(errors="replace"), remote.env_file)
    return Secrets(password, env, url_password(remote.repo))


def _read_secret_file(path: str, what: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            data = f.read(MAX_SECRET_FILE + 1)
    except OSError as e:
        raise FileError(f"cannot read the {what} ({path}): {e.strerror or e}") from None
    if len(data) > MAX_SECRET_FILE:
        raise FileError(f"the {what} ({path}) is over {MAX_SECRET_FILE // 1024} KiB")
    return data


def _run_password_command(remote: Remote) -> bytes:
    assert remote.password_command is not None
    what = f"the password command of remote {quoted(remote.name)}"
    try:
        argv = shlex.split(remote.password_command)
    except ValueError as e:
        raise UsageError(f"{what} does not parse: {e}") from None
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=PASSWORD_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise FileError(f"{what} did not finish in {PASSWORD_COMMAND_TIMEOUT} s") from None
    except (OSError, subprocess.SubprocessError) as e:
        # Its program only: the rest of the command line may hold a token.
        why = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise FileError(f"{what} cannot run {quoted(argv[0] if argv else '')}: {why}") from None
    if done.returncode != 0:
        raise FileError(f"{what} failed (exit {done.returncode})")
    return done.stdout.rstrip(b"\r\n")


def parse_env(text: str, where: str) -> tuple[tuple[str, str], ...]:
    """`NAME=value` lines (blank lines and # comments skipped; one level of matching quotes
    around a value is taken off); UsageError naming the line for anything else."""
    found: list[tuple[str, str]] = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.removeprefix("export ").partition("=")
        name = name.strip()
        if not eq or not _ENV_NAME.fullmatch(name):
            raise UsageError(f"{where}, line {n}: not NAME=value")
        if _RESERVED_ENV.match(name):
            raise UsageError(f"{where}, line {n}: {name} is voltool's to set")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        if "\0" in value:
            raise UsageError(f"{where}, line {n}: a value holds a NUL byte")
        found.append((name, value))
    return tuple(found)


def redact(text: str, secret: Secrets | None) -> str:
    """`text` with every secret value of `secret` replaced by ***."""
    if secret is None:
        return text
    for value in sorted(secret.values(), key=len, reverse=True):
        text = text.replace(value, "***")
    return text


# -- editing the config file -----------------------------------------------


def add(path: Path, remote: Remote) -> None:
    """Append `remote`'s table to the config file at `path` (made, 0600, if missing);
    UsageError if a remote of that name is there already."""
    remote.check()
    text = _read_text(path)
    current = _parse_text(text, path)
    if remote.name in current.get("remotes", {}):
        raise UsageError(f"remote {quoted(remote.name)} is already in {path}")
    lines = [f"[remotes.{remote.name}]"]
    lines += [f"{k} = {_toml_string(v)}" for k, v in remote.table().items()]
    sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
    new = text + sep + "\n".join(lines) + "\n"
    written = _parse_text(new, path)
    if written.get("remotes", {}).get(remote.name) != remote.table():
        raise UsageError(f"cannot add remote {quoted(remote.name)} to {path}: edit it by hand")
    # A password in the repository's URL is a secret in the file: its owner's alone.
    _write_text(path, new, private=bool(url_password(remote.repo)))


def remove(path: Path, name: str) -> None:
    """Remove remote `name`'s `[remotes.NAME]` table from the config file; NotFound if the
    file has none, UsageError if it is written in a way this cannot edit."""
    text = _read_text(path)
    current = _parse_text(text, path)
    if name not in current.get("remotes", {}):
        raise NotFound(f"no remote {quoted(name)} in {path}")
    lines = text.splitlines(keepends=True)
    header = f"[remotes.{name}]"
    start = next((i for i, ln in enumerate(lines) if ln.split("#")[0].strip() == header), None)
    if start is None:
        raise UsageError(f"remote {quoted(name)} is not a [remotes.{name}] table: edit {path}")
    end = start + 1
    while end < len(lines) and not lines[end].lstrip().startswith("["):
        end += 1
    new = "".join(lines[:start] + lines[end:])
    expected = dict(current)
    expected["remotes"] = {k: v for k, v in current["remotes"].items() if k != name}
    if not expected["remotes"]:
        del expected["remotes"]
    got = _parse_text(new, path)
    if got.get("remotes") == {}:
        got = {k: v for k, v in got.items() if k != "remotes"}
    if got != expected:
        raise UsageError(f"cannot remove remote {quoted(name)} from {path}: edit it by hand")
    _write_text(path, new)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise FileError(f"cannot read configuration file {path}: {e}") from None


def _parse_text(text: str, path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"cannot read configuration file {path}: {e}") from None


def _write_text(path: Path, text: str, private: bool = False) -> None:
    """Replace the file by rename (through a symlink to it: the file it names); its mode is
    kept, and a new file is 0600, as is one that is to be `private`."""
    path = Path(os.path.realpath(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.stat().st_mode & 0o7777
        except FileNotFoundError:
            mode = 0o600
        if private:
            mode &= 0o700
        fd, temp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
                f.flush()
                os.fchmod(f.fileno(), mode)
                os.fsync(f.fileno())
            os.replace(temp, path)
        except BaseException:
            os.unlink(temp)
            raise
    except OSError as e:
        raise FileError(f"cannot write configuration file {path}: {e.strerror or e}") from None


def _toml_string(value: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's, given ASCII output."""
    import json

    return json.dumps(value, ensure_ascii=True)
