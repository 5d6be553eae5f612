"""Turning library values into tables, JSON and words. No engine access here."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:  # imported where they are used: start-up time is a feature
    from rich.table import Table

    from voltool.engine.quiesce import Held
    from voltool.ops.prune import PruneItem
    from voltool.ops.restore import RestorePlan, RestoreResult
    from voltool.store.catalog import Snapshot
    from voltool.store.checks import Report
    from voltool.store.manifest import ManifestEntry

# C0 and C1 control characters and DEL, shown escaped: a name or note from an
# imported archive must not be able to send escape sequences to a terminal.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}
_CONTROL_KEEP_LINES = {c: v for c, v in _CONTROL.items() if c not in (0x09, 0x0A)}


def printable(text: str, lines: bool = False) -> str:
    """`text` with control characters escaped (tabs and newlines too, unless `lines`)."""
    return text.translate(_CONTROL_KEEP_LINES if lines else _CONTROL)


class _Console(Console):
    """A Console that escapes control characters in every string it prints."""

    def print(self, *objects: Any, **kwargs: Any) -> None:
        super().print(
            *(printable(o, lines=True) if isinstance(o, str) else o for o in objects), **kwargs
        )


out = _Console(highlight=False, soft_wrap=True)
err = _Console(stderr=True, highlight=False, soft_wrap=True)
if not out.is_terminal:
    out.width = 250  # piped output: one line per row, never wrapped at 80 columns


def print_json(value: Any) -> None:
    """One compact JSON document per line: a list is a record per line (JSON Lines), so
    that output appended to a file by successive runs stays one document per line."""
    for record in value if isinstance(value, list) else [value]:
        sys.stdout.write(
            json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n"
        )


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def age(when: dt.datetime, now: dt.datetime | None = None) -> str:
    seconds = int(((now or dt.datetime.now(dt.UTC)) - when).total_seconds())
    if seconds < 0:
        return "in the future"
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds // span}{unit} ago"
    return f"{seconds}s ago"


def snapshot_record(s: Snapshot) -> dict[str, Any]:
    """The JSON form of a snapshot, shared by snapshot, list and inspect."""
    info, meta = s.info, s.meta
    return {
        "id": s.id,
        "volume": s.volume,
        "source": s.source,
        "created": s.created.isoformat(),
        "kind": s.kind,
        "state": s.state,
        "entries": info.entries if info else None,
        "bytes": info.bytes if info else None,
        "tree_digest": info.tree_digest if info else None,
        "quiesce": info.quiesce if info else None,
        "origin_id": info.origin_id if info else None,  # imports: the id it was exported with
        "origin_created": info.origin_created if info else None,
        "name": meta.name if meta else None,
        "note": meta.note if meta else None,
        "pinned": s.pinned,
        "etag": meta.etag if meta else None,
        "problem": s.problem,
    }


def snapshot_table(snapshots: list[Snapshot]) -> Table:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("ID", "VOLUME", "CREATED", "SIZE", "ENTRIES", "KIND", "NAME", "PINNED", "STATE"):
        table.add_column(
            col, justify="right" if col in ("SIZE", "ENTRIES") else "left", no_wrap=True
        )
    for s in snapshots:
        local = s.created.astimezone()
        table.add_row(
            s.id[:12],
            printable(s.source),
            f"{local:%Y-%m-%d %H:%M:%S} ({age(s.created)})",
            human_bytes(s.info.bytes if s.info else None),
            str(s.info.entries) if s.info else "-",
            printable(s.kind),
            s.name or "",
            "yes" if s.pinned else "",
            s.state,
        )
    return table


def copy_record(summary: Any) -> dict[str, Any]:
    """What the agent did for a stored snapshot (nothing for a format-1 one)."""
    if summary is None:
        return {}
    keys = ("bytes_copied", "bytes_linked", "files_linked", "peak_rss_kib")
    return {"copy": {k: getattr(summary, k) for k in keys}}


def du_record(s: Snapshot, alone: int, used: Any) -> dict[str, Any]:
    """A stored snapshot's size, what it alone holds, and its store's total."""
    return {
        "id": s.id,
        "source": s.source,
        "created": s.created.isoformat(),
        "bytes": s.info.bytes if s.info else None,
        "alone_bytes": alone,
        "store": used.store,
    }


def du_table(rows: list[dict[str, Any]]) -> Table:
    """Snapshots with their sizes, each store's total after its snapshots."""
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("ID", "VOLUME", "CREATED", "SIZE", "ALONE"):
        table.add_column(col, justify="right" if col in ("SIZE", "ALONE") else "left")
    for r in sorted(rows, key=lambda r: (r["source"], "total_bytes" in r, r.get("created", ""))):
        if "total_bytes" in r:
            table.add_row(
                "", printable(r["source"]), "store, in all", "", human_bytes(r["total_bytes"])
            )
            continue
        created = dt.datetime.fromisoformat(r["created"]).astimezone()
        table.add_row(
            r["id"][:12],
            printable(r["source"]),
            f"{created:%Y-%m-%d %H:%M:%S}",
            human_bytes(r["bytes"]),
            human_bytes(r["alone_bytes"]),
        )
    return table


_TYPE_CHAR = {"file": "-", "dir": "d", "symlink": "l", "char": "c", "block": "b", "fifo": "p"}


def tree_line(e: ManifestEntry) -> str:
    """One manifest entry as `ls -l` shows it: type and mode, owner, size, mtime, path."""
    import stat

    mode = _TYPE_CHAR.get(e.type, "?") + stat.filemode(e.mode)[1:]
    when = dt.datetime.fromtimestamp(e.mtime, dt.UTC).astimezone()
    size = e.dev.replace(",", ", ") if e.dev else str(e.size)
    name = "/" if e.path == "." else "/" + e.path
    link = f" -> {e.target}" if e.target is not None else ""
    return printable(
        f"{mode} {e.uid:>5} {e.gid:>5} {size:>12} {when:%Y-%m-%d %H:%M:%S} {name}{link}"
    )


def restore_plan_record(plan: RestorePlan) -> dict[str, Any]:
    return {
        "snapshot": plan.snapshot.id,
        "source": plan.info.source,
        "target": plan.target,
        "create": plan.create,
        "containers": [c.name for c in plan.containers],
        "changes": plan.counts(),
        "entries": plan.info.entries,
        "bytes": plan.info.bytes,
        "needed_bytes": plan.needed,
        "available_bytes": plan.available,
    }


def print_restore_plan(plan: RestorePlan, stream: Console = out) -> None:
    """The plan in words: what is restored where, who stops, and what changes."""
    s = plan.snapshot
    stream.print(
        f"restore snapshot {s.id} of {plan.info.source} "
        f"({s.created.astimezone():%Y-%m-%d %H:%M:%S}, "
        f"{plan.info.entries} entries, {human_bytes(plan.info.bytes)})",
        markup=False,
    )
    stream.print(
        f"  into volume:  {plan.target}" + ("  (to be created)" if plan.create else ""),
        markup=False,
    )
    names = ", ".join(c.name for c in plan.containers) or "none"
    stream.print(f"  containers stopped for the swap and started again: {names}", markup=False)
    counts = plan.counts()
    if counts is not None:
        stream.print(
            "  changes: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()),
            markup=False,
        )
        assert plan.changes is not None
        marks = {"added": "+", "removed": "-", "changed": "~"}
        for c in plan.changes.first:
            stream.print(f"    {marks[c.kind]} {printable(c.path)}", markup=False)
        if plan.changes.total > len(plan.changes.first):
            stream.print(
                f"    ... and {plan.changes.total - len(plan.changes.first)} more "
                f"(voltool diff {s.id[:12]})",
                markup=False,
            )
    free = human_bytes(plan.available) if plan.available is not None else "unknown"
    stream.print(f"  space: {human_bytes(plan.needed)} needed, {free} free", markup=False)


def print_restore_plans(
    plans: Sequence[RestorePlan], project: str | None, stream: Console = out
) -> None:
    """Each member's plan; for a group, first what is restored together, and whether its
    snapshots were taken at one instant."""
    if project is not None:
        names = ", ".join(p.target for p in plans)
        stream.print(
            f"restore Compose project {project} together ({len(plans)} volumes: {names}); "
            "every container of theirs is stopped once, for all the swaps",
            markup=False,
        )
        if len({p.snapshot.op for p in plans}) > 1:
            stream.print(
                "  note: these snapshots were not taken together; each is of its own moment",
                markup=False,
            )
    for p in plans:
        print_restore_plan(p, stream)


def restore_result_record(result: RestoreResult) -> dict[str, Any]:
    return {
        "op": result.op,
        "snapshot": result.snapshot,
        "target": result.target,
        "pre_restore_snapshot": result.safety_snapshot,
        "restarted": list(result.restarted),
        "downtime_seconds": round(result.downtime, 3),
        "containers": held_records(result.held),
    }


_VERBS = {"pause": "paused", "stop": "stopped"}


def held_lines(held: Sequence[Held]) -> list[str]:
    """What was done to containers, one line per action: "paused db, web for 0.8 s"
    (the longest of them)."""
    lines = []
    for action, verb in _VERBS.items():
        some = [h for h in held if h.action == action]
        if some:
            names = ", ".join(printable(h.name) for h in some)
            lines.append(f"{verb} {names} for {max(h.seconds for h in some):.1f} s")
    return lines


def held_records(held: Sequence[Held]) -> list[dict[str, Any]]:
    """Each container held, as JSON: {"name": "db", "paused_s": 0.812} (or "stopped_s")."""
    return [{"name": h.name, f"{_VERBS[h.action]}_s": round(h.seconds, 3)} for h in held]


def prune_records(items: list[PruneItem], removed: list[str] | None) -> list[dict[str, Any]]:
    """The plan as JSON; `removed` (after execution) says which removals happened."""
    return [
        {
            "id": i.snapshot.id,
            "source": i.snapshot.source,
            "kind": i.snapshot.kind,
            "name": i.snapshot.name,
            "created": i.snapshot.created.isoformat(),
            "action": "remove" if i.remove else "keep",
            "reasons": list(i.reasons),
            "policy": i.policy,
            **({} if removed is None else {"removed": i.snapshot.id in removed}),
        }
        for i in items
    ]


def print_prune_plan(items: list[PruneItem], stream: Console = out) -> None:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("ID", "VOLUME", "CREATED", "KIND", "NAME", "ACTION", "WHY"):
        table.add_column(col, no_wrap=col != "WHY")
    for i in items:
        s = i.snapshot
        table.add_row(
            s.id[:12],
            s.source,
            f"{s.created.astimezone():%Y-%m-%d %H:%M}",
            s.kind,
            s.name or "",
            "remove" if i.remove else "keep",
            "; ".join(i.reasons),
        )
    stream.print(table)
    for policy in sorted({i.policy for i in items if i.policy}):
        stream.print(f"policy: {policy}", markup=False)


def verify_record(r: Report) -> dict[str, Any]:
    return {
        "id": r.snapshot.id,
        "source": r.snapshot.source,
        "ok": r.ok,
        "checked": r.checked,
        "missing": list(r.found.missing),
        "extra": list(r.found.extra),
        "altered": [{"path": p, "fields": list(f)} for p, f in r.found.altered],
        "counts": dict(zip(("missing", "extra", "altered"), r.found.counts, strict=True)),
        "problem": r.problem,
    }


def print_verify_report(r: Report) -> None:
    s = r.snapshot
    if r.ok:
        out.print(f"ok    {s.id}  {s.source}  ({r.checked} entries)", markup=False)
        return
    if r.problem:
        out.print(f"FAIL  {s.id}  {s.source}: {r.problem}", markup=False)
        return
    f = r.found
    missing, extra, altered = f.counts
    out.print(
        f"FAIL  {s.id}  {s.source}: {missing} missing, {extra} extra, {altered} altered",
        markup=False,
    )
    for p in f.missing:
        out.print(f"  missing  {printable(p)}", markup=False)
    for p in f.extra:
        out.print(f"  extra    {printable(p)}", markup=False)
    for p, fields in f.altered:
        out.print(f"  altered  {printable(p)}  ({', '.join(fields)})", markup=False)
    listed = len(f.missing) + len(f.extra) + len(f.altered)
    if listed < sum(f.counts):
        out.print(f"  ... {sum(f.counts) - listed} more not listed", markup=False)
