"""Checking a tree against its manifest.

Every file of the tree is read and hashed again; every entry's type, mode,
owner, size, content hash, symlink target, hard-link group (`link`), device
numbers and xattrs are compared with the manifest's entry at the same path.
Times, inode numbers and link counts are not: a stored tree shares inodes with
other snapshots, and restoring it sets times afresh. Differences are written
to stdout as JSON lines:

    {"mismatch": "missing", "path": P}      in the manifest, not in the tree
    {"mismatch": "extra", "path": P}        in the tree, not in the manifest
    {"mismatch": "changed", "path": P, "field": F, "expected": X, "found": Y}

with values spelled as in the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from .digest import TreeDigest
from .entry import Entry
from .links import LinkGroups
from .merge import ManifestCursor
from .names import pack
from .report import Reporter
from .scan import Scanner

COMPARED = ("type", "mode", "uid", "gid", "size", "sha256", "target", "link", "rdev", "xattrs")


def verify(
    reporter: Reporter,
    root_fd: int,
    manifest: ManifestCursor,
    write: Callable[[bytes], Any],
    groups: LinkGroups | None = None,
) -> tuple[str, str]:
    """Compare; return the digests of the tree and of the manifest. `groups`: how the
    tree's hard-link groups are found (a stored tree's are its manifest's)."""
    tree_digest, manifest_digest = TreeDigest(), TreeDigest()
    counts = reporter.counts

    def out(obj: dict[str, Any]) -> None:
        counts.mismatches += 1
        write(json.dumps(obj, sort_keys=True, ensure_ascii=True).encode("ascii") + b"\n")

    def missing(expected: Entry) -> None:
        manifest_digest.add(expected)
        out({"mismatch": "missing", "path": pack(expected.path)})

    for found in Scanner(reporter, groups).entries(root_fd):
        counts.entries += 1
        counts.files += found.type == "file"
        tree_digest.add(found)
        expected = manifest.take(found.path, missing)
        if expected is None:
            out({"mismatch": "extra", "path": pack(found.path)})
            continue
        manifest_digest.add(expected)
        want, have = expected.digest_fields(), found.digest_fields()
        for field in COMPARED:
            if want.get(field) != have.get(field):
                out(
                    {
                        "mismatch": "changed",
                        "path": pack(found.path),
                        "field": field,
                        "expected": want.get(field),
                        "found": have.get(field),
                    }
                )
    for expected in manifest.rest():
        missing(expected)
    return tree_digest.hexdigest(), manifest_digest.hexdigest()
