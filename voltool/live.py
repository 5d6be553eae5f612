"""A live volume's tree, read the same way a snapshot reads it: its manifest and digest.

A restore's working entries (`.voltool-stage-*`, `.voltool-old-*`,
`.voltool-swap-*` at the top) are left out: they are voltool's, not the user's.
"""

from __future__ import annotations

import contextlib

from voltool.engine import Mount
from voltool.ids import new_id
from voltool.layout import is_private
from voltool.manifest import Manifest
from voltool.runtime import Runtime
from voltool.transfer import Transfer
from voltool.validate import EntryValidator, Limits


def manifest_of(rt: Runtime, volume: str, op: str | None = None) -> Manifest:
    """The manifest of `volume` as it is now (the caller decides what must hold still)."""
    labels = rt.helper_labels(op or new_id())
    with (
        rt.engine.helper(rt.image, [Mount(volume, "/data", read_only=True)], labels) as cid,
        contextlib.closing(rt.engine.get_archive(cid, "/data")) as stream,
    ):
        transfer = Transfer(
            stream, EntryValidator("data", Limits(allow_special=True)), "data", skip=is_private
        )
        for _ in transfer:
            pass  # only the manifest is wanted; the re-emitted stream goes nowhere
    return transfer.manifest
