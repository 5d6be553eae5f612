"""A live volume's tree, read the same way a snapshot reads it: its manifest and digest.

Used by `digest`, `diff`, the restore's change summary and its `--if-match`.
"""

from __future__ import annotations

import contextlib

from voltool.engine import Mount
from voltool.ids import new_id
from voltool.layout import Names
from voltool.manifest import Manifest
from voltool.runtime import Runtime
from voltool.transfer import Transfer
from voltool.validate import EntryValidator, Limits


def manifest_of(
    rt: Runtime, volume: str, op: str | None = None, own: Names | None = None
) -> Manifest:
    """The manifest of `volume` as it is now (the caller decides what must hold still).

    `own`: a running restore's working entries, left out of its own digest.
    Nothing else is left out: a name that merely looks like voltool's is data.
    """
    working = {own.stage, own.old, own.mark} if own else set()

    def skip(rel: str) -> bool:
        return rel.split("/", 1)[0] in working

    labels = rt.helper_labels(op or new_id())
    with (
        rt.engine.helper(rt.image, [Mount(volume, "/data", read_only=True)], labels) as cid,
        contextlib.closing(rt.engine.get_archive(cid, "/data")) as stream,
    ):
        transfer = Transfer(
            stream, EntryValidator("data", Limits(allow_special=True)), "data", skip=skip
        )
        for _ in transfer:
            pass  # only the manifest is wanted; the re-emitted stream goes nowhere
    return transfer.manifest
