"""Remotes: the config file's tables and their editing, secrets and what keeps them out of
messages, restic's words mapped to exit codes, and the tags a pushed snapshot carries."""

from __future__ import annotations

import datetime as dt
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from voltool import remotes
from voltool.config import load
from voltool.engine import restic
from voltool.engine.client import RunResult
from voltool.errors import (
    AmbiguousReference,
    Busy,
    ExitCode,
    FileError,
    IntegrityError,
    NotFound,
    RemoteError,
    UsageError,
)
from voltool.ops import remote as ops
from voltool.remotes import Remote, Secrets
from voltool.store.layout import Meta, SnapshotInfo

EXISTING = """# my settings
timeout = 300

[prune]
keep-daily = 7  # a week

[prune.volumes.pgdata]
keep-last = 3
"""


@pytest.fixture
def cfg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    monkeypatch.setenv("VOLTOOL_CONFIG", str(path))
    return path


def test_add_then_remove_leaves_the_rest_of_the_file_as_it_was(cfg: Path) -> None:
    cfg.write_text(EXISTING)
    os.chmod(cfg, 0o640)
    remotes.add(cfg, Remote("offsite", "rest:https://h/x", password_file="/k/pw"))
    remotes.add(cfg, Remote("usb", "/mnt/usb/repo", password_command="pass show usb"))
    found = remotes.from_config(load())
    assert found["offsite"] == Remote("offsite", "rest:https://h/x", password_file="/k/pw")
    assert found["usb"].path == "/mnt/usb/repo" and found["usb"].helper_network == "none"
    assert found["offsite"].helper_network == "host"
    assert load().values["timeout"] == 300  # the rest still reads
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o640  # its mode kept
    with pytest.raises(UsageError, match="already"):
        remotes.add(cfg, Remote("usb", "/elsewhere", password_file="/k/pw"))
    remotes.remove(cfg, "offsite")
    remotes.remove(cfg, "usb")
    assert cfg.read_text().rstrip("\n") == EXISTING.rstrip("\n")
    with pytest.raises(NotFound):
        remotes.remove(cfg, "usb")


def test_a_new_config_file_is_private_and_one_with_a_password_in_a_url_becomes_so(
    cfg: Path,
) -> None:
    remotes.add(cfg, Remote("a", "/r", password_file="/pw"))
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600
    os.chmod(cfg, 0o644)
    remotes.add(cfg, Remote("b", "/r2", password_file="/pw"))
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o644
    remotes.add(cfg, Remote("c", "rest:https://u:pw@h/", password_file="/pw"))
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("remote", "words"),
    [
        (Remote("x", "relative/path", password_file="/pw"), "repo must be"),
        (Remote("x", "ftp://h/r", password_file="/pw"), "repo must be"),
        (Remote("x", "sftp:u@h:/r", password_file="/pw"), "rest:"),
        (Remote("x", "rclone:remote:r", password_file="/pw"), "rest:"),
        (Remote("x", "local:rel", password_file="/pw"), "absolute"),
        (Remote("x", "/r"), "one of password_file and password_command"),
        (Remote("x", "/r", password_file="/pw", password_command="c"), "one of"),
        (Remote("bad name", "/r", password_file="/pw"), "invalid remote name"),
        (Remote("x", "/r", password_file="/pw", network="host;rm"), "network"),
    ],
    ids=[
        *("relative", "unknown-backend", "sftp", "rclone", "local-relative", "no-password"),
        *("two", "name", "net"),
    ],
)
def test_a_remote_that_cannot_work_is_refused(remote: Remote, words: str) -> None:
    with pytest.raises(UsageError, match=words):
        remote.check()


def test_an_unknown_key_in_a_remote_table_is_refused(cfg: Path) -> None:
    cfg.write_text('[remotes.a]\nrepo = "/r"\npassword_file = "/pw"\npasword = "x"\n')
    with pytest.raises(UsageError, match="pasword"):
        remotes.from_config(load())


def test_secrets_come_from_a_file_or_a_command_and_are_never_empty(tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    env = tmp_path / "env"
    env.write_text("# creds\nexport AWS_ACCESS_KEY_ID=AKIA1\nAWS_SECRET_ACCESS_KEY='a b$c'\n\n")
    got = remotes.secrets(Remote("a", "/r", password_file=str(pw), env_file=str(env)))
    assert got.password == b"s3cret"
    assert got.env == (("AWS_ACCESS_KEY_ID", "AKIA1"), ("AWS_SECRET_ACCESS_KEY", "a b$c"))
    assert b"export AWS_SECRET_ACCESS_KEY='a b$c'\n" in got.env_script()
    by_command = remotes.secrets(Remote("a", "/r", password_command="printf from-command"))
    assert by_command.password == b"from-command"
    with pytest.raises(FileError, match="empty"):
        remotes.secrets(Remote("a", "/r", password_command="true"))
    with pytest.raises(FileError, match="failed"):
        remotes.secrets(Remote("a", "/r", password_command="false"))
    with pytest.raises(FileError, match="cannot read"):
        remotes.secrets(Remote("a", "/r", password_file=str(tmp_path / "missing")))
    assert FileError.exit_code == ExitCode.FILE


@pytest.mark.parametrize(
    "text",
    ["NOEQUALS", "1BAD=x", "RESTIC_PASSWORD=x", "RESTIC_REPOSITORY_FILE=/x", "PATH=/x", "s=/"],
    ids=["no-equals", "bad-name", "password", "repository", "path", "lower-case"],
)
def test_an_env_file_line_that_is_not_a_backend_setting_is_refused(text: str) -> None:
    with pytest.raises(UsageError, match="line 1"):
        remotes.parse_env(text, "env")


def test_every_secret_is_redacted_and_the_repo_shown_without_its_password(
    tmp_path: Path,
) -> None:
    pw = tmp_path / "pw"
    pw.write_text("hunter22")
    remote = Remote("a", "rest:https://me:in-url-secret@host:8000/r", password_file=str(pw))
    assert remote.shown == "rest:https://me:***@host:8000/r"
    at_sign = Remote("b", "rest:https://me:p@ss@host/r", password_file=str(pw))
    assert at_sign.shown == "rest:https://me:***@host/r"  # the last @ ends it, as in Go
    assert remotes.url_password(at_sign.repo) == "p@ss"
    token = Remote("c", "rest:https://T0KEN@host/r", password_file=str(pw))
    assert token.shown == "rest:https://***@host/r" and remotes.url_password(token.repo) == "T0KEN"
    for unclear in ("rest:https://u:pa/ss@host/", "rest:https://u:p?w@host/", "rest:https://h/a#b"):
        with pytest.raises(UsageError, match="percent-encode"):
            Remote("d", unclear, password_file=str(pw)).check()
    s = remotes.secrets(remote)
    text = "Fatal: hunter22 and in-url-secret at rest:https://me:in-url-secret@host"
    assert "hunter22" not in remotes.redact(text, s)
    assert "in-url-secret" not in remotes.redact(text, s)


class FakeEngine:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def run(self, image: str, mounts: Any, labels: Any, script: str, args: Any, env: Any = None,
            **kw: Any) -> RunResult:  # fmt: skip
        self.calls.append({"args": list(args), "env": env, "mounts": list(mounts), **kw})
        return RunResult(0, b"", b"")


class FakeRuntime:
    def __init__(self) -> None:
        self.engine = FakeEngine()

    def helper_labels(self, op: str) -> dict[str, str]:
        return {"io.voltool.op": op}


def test_restic_gets_its_secrets_as_files_never_as_arguments_or_environment() -> None:
    remote = Remote("a", "rest:https://u:url-pw@h/r", password_file="/pw")
    repo = restic.Repository(remote, Secrets(b"the-password", (("AWS_SECRET", "k3y"),), "url-pw"))
    rt = FakeRuntime()
    restic.run(rt, "img", repo, "op", ["snapshots", "--json"])  # type: ignore[arg-type]
    (call,) = rt.engine.calls
    shown = repr(call["args"]) + repr(call["env"]) + repr(call["mounts"])
    assert "the-password" not in shown and "k3y" not in shown and "url-pw" not in shown
    files = call["files"]
    assert files["/.voltool-secrets/password"] == b"the-password\n"
    assert files["/.voltool-secrets/repository"] == b"rest:https://u:url-pw@h/r\n"
    assert b"k3y" in files["/.voltool-secrets/env"]
    assert call["network"] == "host"
    local = restic.Repository(Remote("b", "/srv/r", password_file="/pw"), Secrets(b"p"))
    assert local.files()["/.voltool-secrets/repository"] == b"/repository\n"
    assert [(m.volume, m.path, m.bind) for m in local.mounts()] == [("/srv/r", "/repository", True)]


@pytest.mark.parametrize(
    ("stderr", "error", "code"),
    [
        (b"Fatal: wrong password or no key found\n", RemoteError, 13),
        (b"Fatal: unable to open config file: dial tcp\nIs there a repository", RemoteError, 13),
        (b"Fatal: unable to create lock: repository is already locked by PID 1", Busy, 4),
        (b"Fatal: repository contains errors\n", IntegrityError, 6),
        (b"ciphertext verification failed\n", IntegrityError, 6),
        (b"Fatal: something new\n", RemoteError, 13),
    ],
    ids=["password", "unreachable", "locked", "check", "cipher", "other"],
)  # fmt: skip
def test_restic_failures_map_to_documented_exit_codes(
    stderr: bytes, error: type[Exception], code: int
) -> None:
    repo = restic.Repository(Remote("a", "/r", password_file="/pw"), Secrets(b"pw-value"))
    got = restic.failure(RunResult(1, b"", stderr + b" pw-value"), repo, "doing it")
    assert isinstance(got, error) and got.exit_code == code
    assert "pw-value" not in str(got) and "\n" not in str(got)


def info(sid: str = "0123456789abcdef") -> SnapshotInfo:
    return SnapshotInfo(
        format=2,
        id=sid,
        source="pgdata",
        created="2026-11-30T10:20:30+00:00",
        kind="manual",
        entries=12,
        bytes=3456,
        tree_digest="ab" * 32,
    )


def test_tags_say_everything_a_listing_shows_and_read_back_the_same() -> None:
    tags = ops.tags(info(), Meta("before-upgrade", None, True), "AB:CD")
    assert all("," not in t for t in tags)
    got = ops.parse({"id": "f" * 64, "tags": tags})
    assert got is not None
    assert (got.id, got.source, got.kind, got.digest) == (
        "0123456789abcdef", "pgdata", "manual", "ab" * 32
    )  # fmt: skip
    assert (got.bytes, got.entries, got.engine) == (3456, 12, "AB:CD")
    assert got.name == "before-upgrade" and got.pinned
    assert got.created == dt.datetime(2026, 11, 30, 10, 20, 30, tzinfo=dt.UTC)
    as_local = got.as_snapshot("offsite")
    assert as_local.state == "complete" and as_local.pinned and as_local.name == "before-upgrade"


TAGS = ops.tags(info(), Meta(), "")


@pytest.mark.parametrize(
    "raw",
    [
        {"id": "f" * 64, "tags": ["other"]},
        {"id": "f" * 64, "tags": ["voltool", "voltool.id=../x"]},
        {"id": "f" * 64, "tags": TAGS[:-1]},  # no entries
        {"id": "f" * 64, "tags": [t.replace("=ab", "=zz") for t in TAGS]},
        {"id": "f" * 64, "tags": [t.replace("=pgdata", "=../x") for t in TAGS]},
        "not an object",
    ],
    ids=["not-ours", "bad-id", "missing-field", "bad-digest", "bad-volume", "not-object"],
)  # fmt: skip
def test_a_restic_snapshot_that_is_not_a_well_formed_voltool_one_is_left_out(raw: Any) -> None:
    assert ops.parse(raw) is None


def test_a_remote_snapshot_is_found_by_a_unique_prefix() -> None:
    listing = [
        x
        for x in (
            ops.parse({"id": "1" * 64, "tags": ops.tags(info("aaaa1111bbbb2222"), Meta(), "")}),
            ops.parse({"id": "2" * 64, "tags": ops.tags(info("aaaa1111cccc3333"), Meta(), "")}),
        )
        if x is not None
    ]
    assert ops.find(listing, "aaaa1111b", "r").id == "aaaa1111bbbb2222"
    with pytest.raises(AmbiguousReference):
        ops.find(listing, "aaaa1111", "r")
    with pytest.raises(NotFound):
        ops.find(listing, "ffff", "r")
    with pytest.raises(UsageError):
        ops.find(listing, "aa", "r")


def test_a_pending_push_is_never_listed_as_a_copy() -> None:
    pending = ops.parse({"id": "e" * 64, "tags": [*TAGS, ops.PENDING]})
    whole = ops.parse({"id": "f" * 64, "tags": TAGS})
    assert pending is not None and pending.pending and whole is not None
    assert ops.complete([pending, whole]) == [whole]


def test_a_creation_time_that_cannot_be_shown_is_left_out() -> None:
    bad = [
        t if not t.startswith("voltool.created=") else "voltool.created=0001-01-01T00:00:00+01:00"
        for t in TAGS
    ]
    assert ops.parse({"id": "f" * 64, "tags": bad}) is None


def test_doctor_fails_the_config_check_for_a_malformed_remote(cfg: Path) -> None:
    from voltool.cli import doctor
    from voltool.config import load_checked

    cfg.write_text('[remotes.a]\nrepo = "relative/path"\npassword_file = "/pw"\n')
    (check,) = doctor._config_checks(*load_checked())
    assert check.status == "fail" and "repo must be" in check.detail
    cfg.write_text('[remotes.a]\nrepo = "/srv/r"\npassword_file = "/pw"\n')
    (check,) = doctor._config_checks(*load_checked())
    assert check.status == "ok"


def test_a_push_cut_short_is_a_leftover_only_when_this_engine_began_it_over_an_hour_ago() -> None:
    def pending(pushed: str, engine: str = "E") -> ops.RemoteSnapshot:
        tags = [*ops.tags(info(), Meta(), engine), ops.PENDING, f"voltool.pushed={pushed}"]
        got = ops.parse({"id": "a" * 64, "tags": tags})
        assert got is not None and got.pending
        return got

    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    old, recent = pending("2026-12-01T10:00:00+00:00"), pending("2026-12-01T11:30:00+00:00")
    others = pending("2026-12-01T09:00:00+00:00", engine="F")
    whole = ops.parse({"id": "b" * 64, "tags": ops.tags(info(), Meta(), "E")})
    assert whole is not None
    assert ops.leftovers([old, recent, others, whole], "E", now) == [old]
