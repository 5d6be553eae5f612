"""The labels that mark what voltool created in the engine."""

from __future__ import annotations

MANAGED = "io.voltool.managed"  # "true" on every helper, lock, keeper and snapshot volume
ROLE = "io.voltool.role"  # "helper" | "lock" | "keeper" | "snapshot"
OP = "io.voltool.op"  # id of the operation that created it
OWNER = "io.voltool.owner"  # the creating process, see voltool.owner

ROLE_HELPER = "helper"
ROLE_LOCK = "lock"
ROLE_KEEPER = "keeper"
ROLE_SNAPSHOT = "snapshot"

# Snapshot volumes: what is known at creation, so that listing needs no helper.
FORMAT = "io.voltool.format"
SNAPSHOT_ID = "io.voltool.snapshot.id"
SOURCE = "io.voltool.snapshot.source"
CREATED = "io.voltool.snapshot.created"
KIND = "io.voltool.snapshot.kind"

# Lock containers.
LOCK_VOLUME = "io.voltool.lock.volume"
LOCK_KIND = "io.voltool.lock.kind"
LOCK_SINCE = "io.voltool.lock.since"

# Keeper containers: the snapshot volume each one holds on to.
KEEPER_VOLUME = "io.voltool.keeper.volume"


def managed(role: str, op: str, owner: str) -> dict[str, str]:
    """The labels every object voltool creates carries."""
    return {MANAGED: "true", ROLE: role, OP: op, OWNER: owner}
