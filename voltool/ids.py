"""Ids voltool generates, and the names derived from them.

Snapshot and operation ids are 16 lowercase hex digits. Any id read back from
the engine or from a file is checked against `ID_PATTERN` before it is used in
a volume or container name, so a tampered label can never name something else.
"""

from __future__ import annotations

import datetime as dt
import re
import secrets

from voltool.errors import UsageError
from voltool.words import quoted

ID_LENGTH = 16
ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")
SHORT_ID_LENGTH = 8

SNAPSHOT_VOLUME_PREFIX = "voltool-snap-"
LOCK_CONTAINER_PREFIX = "voltool-lock-"
KEEPER_CONTAINER_PREFIX = "voltool-keep-"

# Docker's own rule for volume names (daemon/names.go: RestrictedNamePattern).
VOLUME_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")


def new_id() -> str:
    """Return a fresh random id that matches `ID_PATTERN`."""
    return secrets.token_hex(ID_LENGTH // 2)


def creation_time() -> dt.datetime:
    """Now, in UTC, to the millisecond: the `created` of a new snapshot.

    Milliseconds, not seconds: two snapshots of one volume taken within a second must
    still list, and count as latest, in the order they were taken."""
    now = dt.datetime.now(dt.UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def is_valid_id(value: str) -> bool:
    return bool(ID_PATTERN.fullmatch(value))


def snapshot_volume_name(snapshot_id: str) -> str:
    """The snapshot volume's name; refuses anything that is not a valid id."""
    if not is_valid_id(snapshot_id):
        raise ValueError(f"not a snapshot id: {quoted(snapshot_id)}")
    return SNAPSHOT_VOLUME_PREFIX + snapshot_id


def check_volume_name(name: str) -> str:
    """Return `name` if Docker could accept it as a volume name, else raise UsageError."""
    if not VOLUME_NAME_PATTERN.fullmatch(name) or len(name) > 255:
        raise UsageError(
            f"invalid volume name {quoted(name)}: up to 255 letters, digits and _.-, "
            "starting with a letter or digit"
        )
    return name


def lock_container_name(volume: str) -> str:
    """The name of the container that serves as `volume`'s lock."""
    return LOCK_CONTAINER_PREFIX + check_volume_name(volume)


def keeper_container_name(snapshot_id: str) -> str:
    """The name of the container that keeps snapshot `snapshot_id`'s volume in use."""
    if not is_valid_id(snapshot_id):
        raise ValueError(f"not a snapshot id: {quoted(snapshot_id)}")
    return KEEPER_CONTAINER_PREFIX + snapshot_id
