"""The labels that mark what voltool created in the engine."""

from __future__ import annotations

MANAGED = "io.voltool.managed"  # "true" on every container and volume voltool makes
ROLE = "io.voltool.role"  # "helper" | "lock" | "keeper" | "record" | "snapshot" | "store"
OP = "io.voltool.op"  # id of the operation that created it
OWNER = "io.voltool.owner"  # the creating process, see voltool.owner

ROLE_HELPER = "helper"
ROLE_LOCK = "lock"
ROLE_KEEPER = "keeper"
ROLE_RECORD = "record"
ROLE_SNAPSHOT = "snapshot"
ROLE_STORE = "store"  # a format-2 store volume (voltool.store.format2)

# Snapshot volumes: what is known at creation, so that listing needs no helper.
# Store volumes carry FORMAT ("2") and SOURCE.
FORMAT = "io.voltool.format"
SNAPSHOT_ID = "io.voltool.snapshot.id"
SOURCE = "io.voltool.snapshot.source"
CREATED = "io.voltool.snapshot.created"
KIND = "io.voltool.snapshot.kind"

# Lock containers.
LOCK_VOLUME = "io.voltool.lock.volume"
LOCK_KIND = "io.voltool.lock.kind"
LOCK_SINCE = "io.voltool.lock.since"

# Operation records (see voltool.engine.records): one journal record each.
RECORD = "io.voltool.record"  # the record, canonical JSON
RECORD_SEQ = "io.voltool.record.seq"  # orders an operation's records
VOLUMES = "io.voltool.volumes"  # the volumes the operation works on, comma-separated

# A volume a restore created (--create): the id of that restore. Only that
# restore's rollback, or `recover` acting for it, may ever remove the volume.
CREATED_BY = "io.voltool.created-by"

# Images voltool builds. Not MANAGED: containers inherit their image's labels,
# and that one marks voltool's own helpers and locks.
IMAGE = "io.voltool.image"  # "helper" (busybox) | "agent"
IMAGE_ORIGIN = "io.voltool.helper.origin"  # how an agent image was made
IMAGE_RESTIC = "io.voltool.restic"  # the restic version an agent image carries, if any
IMAGE_HELPER = "helper"
IMAGE_AGENT = "agent"

# Keeper containers: the snapshot volume each one holds on to.
KEEPER_VOLUME = "io.voltool.keeper.volume"


def managed(role: str, op: str, owner: str) -> dict[str, str]:
    """The labels every object voltool creates carries."""
    return {MANAGED: "true", ROLE: role, OP: op, OWNER: owner}
