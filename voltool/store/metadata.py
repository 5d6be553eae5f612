"""Changing a snapshot's meta.json (name, note, pinned), guarded by its ETag.

The change happens under the snapshot volume's lock (waited for, briefly,
so that concurrent editors are serialised rather than turned away): read
meta.json, compare its ETag with `if_match`, write the new one atomically
(a temporary file renamed over it). Of two editors holding the same ETag,
the second to get the lock finds a new ETag and fails with PreconditionFailed.
"""

from __future__ import annotations

from collections.abc import Callable

from voltool.engine.client import Mount
from voltool.engine.locks import volume_lock
from voltool.errors import EngineError, IntegrityError, PreconditionFailed, UsageError
from voltool.ids import new_id
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.store import catalog
from voltool.store.catalog import Snapshot
from voltool.store.layout import META, Meta
from voltool.words import quoted

EDIT_WAIT = 10.0


def update(
    rt: Runtime,
    snapshot: Snapshot,
    change: Callable[[Meta], Meta],
    if_match: str | None = None,
    wait: float = EDIT_WAIT,
) -> Snapshot:
    """Apply `change` to the snapshot's meta.json; returns the snapshot as it now is."""
    with volume_lock(rt, snapshot.volume, new_id(), "edit", wait):
        current = catalog.with_metadata(rt, [snapshot])[0]
        if current.info is None:
            raise IntegrityError(f"snapshot {snapshot.id} is {current.state}: it cannot be edited")
        meta = current.meta or Meta()  # a missing or damaged meta.json can be written anew
        if if_match is not None and if_match.lower() != (current.meta.etag if current.meta else ""):
            etag = current.meta.etag if current.meta else "none (meta.json is damaged)"
            raise PreconditionFailed(
                f"snapshot {snapshot.id} changed: its ETag is {etag}, not {if_match}; "
                "nothing was changed"
            )
        new = change(meta)
        new.check_input()
        if new.name and new.name != meta.name:
            for other in catalog.list_snapshots(rt, snapshot.source):
                if other.id != snapshot.id and other.name == new.name:
                    raise UsageError(
                        f"volume {quoted(snapshot.source)} already has a snapshot named "
                        f"{quoted(new.name)} "
                        f"({other.id})"
                    )
        if new != meta or current.meta is None:
            _write(rt, snapshot, new)
        return catalog.with_metadata(rt, [snapshot])[0]


def _write(rt: Runtime, snapshot: Snapshot, meta: Meta) -> None:
    result = rt.engine.run(
        rt.image,
        [Mount(snapshot.volume, "/snap")],
        rt.helper_labels(new_id()),
        program("format1-write-meta"),
        [meta.to_json().decode(), snapshot.path(META)],
    )
    if result.exit_code != 0:
        raise EngineError(
            f"could not write {META} of {snapshot.id}: {result.stderr.decode()[:200]}"
        )
