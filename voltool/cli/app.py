"""The `voltool` command: parse, call the library, render, and map errors to exit codes.

Every command is wrapped by `_command`, the one place where voltool's errors
become a one-line message and their exit code, and Ctrl-C becomes 130.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, BinaryIO, NoReturn, ParamSpec, TypeVar, cast

import typer

from voltool import __version__, config
from voltool.cli import complete, render
from voltool.cli.render import err, out
from voltool.cli.reporter import ConsoleReporter
from voltool.engine import helper_image
from voltool.errors import (
    Busy,
    Declined,
    ExitCode,
    IntegrityError,
    NeedsConfirmation,
    NotFound,
    PendingOperation,
    PreconditionFailed,
    UsageError,
    VoltoolError,
)
from voltool.ids import check_volume_name, is_valid_id
from voltool.ops import recover, snapshot
from voltool.runtime import Runtime, connect_engine, open_runtime
from voltool.store import catalog
from voltool.store.layout import Meta
from voltool.tar.validate import DEFAULT_MAX_ENTRIES
from voltool.words import quoted

app = typer.Typer(
    name="voltool",
    help="Point-in-time snapshots of Docker named volumes, and restores that never lose data.",
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_DIGEST = re.compile(r"[0-9a-fA-F]{64}")

P = ParamSpec("P")
R = TypeVar("R")


@dataclass
class Globals:
    overrides: dict[str, Any]
    quiet: bool = False  # --quiet: no notes, no progress; warnings and errors still

    def config(self) -> config.Config:
        return config.load(self.overrides)

    def runtime(self, quiet: bool = False) -> Runtime:
        return open_runtime(self.config(), ConsoleReporter(quiet or self.quiet))


def _command(fn: Callable[P, R]) -> Callable[P, R]:
    """Map voltool's errors to their exit codes; no traceback reaches a user."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except VoltoolError as e:
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", ExitCode.INTERRUPTED)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:  # a bug: say so in one line, keep the trace for VOLTOOL_DEBUG
            if os.environ.get("VOLTOOL_DEBUG"):
                traceback.print_exc()
            _fail(f"unexpected error: {type(e).__name__}: {e}", ExitCode.ERROR)

    return wrapper


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"voltool: error: {' '.join(message.split())}", markup=False)
    raise typer.Exit(int(code))


# Parameters several commands share, declared once.
SnapshotRef = Annotated[
    str | None,
    typer.Argument(
        metavar="SNAPSHOT",
        help="Snapshot id or unique id prefix.",
        show_default=False,
        autocompletion=complete.snapshots,
    ),
]
SnapshotRefs = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[SNAPSHOT]...",
        help="Snapshot ids or unique id prefixes.",
        show_default=False,
        autocompletion=complete.snapshots,
    ),
]
SnapshotName = Annotated[
    str | None, typer.Option("--name", help="Select the snapshot by name instead.")
]
NameVolume = Annotated[
    str | None,
    typer.Option(
        "--volume", help="With --name: the volume whose snapshot it is (names are per volume)."
    ),
]
RequiredRefArg = Annotated[
    str, typer.Argument(metavar="SNAPSHOT", help="Snapshot id or unique id prefix.")
]
StopTimeout = typer.Option(
    None,
    "--stop-timeout",
    metavar="SECONDS",
    min=0,
    help="Seconds a container gets to stop before it is killed (default: the stop_timeout "
    "setting, 10).",
    show_default=False,
)


def _globals(ctx: typer.Context, **settings: Any) -> Globals:
    """The global options; `settings` given (not None) override the configuration's."""
    obj = ctx.find_root().obj
    assert isinstance(obj, Globals)
    obj.overrides.update({k: v for k, v in settings.items() if v is not None})
    return obj


def _version(value: bool) -> None:
    if value:
        out.print(f"voltool {__version__}")
        raise typer.Exit()


@app.callback(invoke_without_command=True)
def _main(
    ctx: typer.Context,
    host: str | None = typer.Option(
        None,
        "--host",
        "-H",
        help="Engine endpoint (unix://, tcp://, ssh://); overrides DOCKER_HOST.",
    ),
    context: str | None = typer.Option(
        None, "--context", help="Docker context to use instead of the current one."
    ),
    helper_image_opt: str | None = typer.Option(
        None, "--helper-image", help="Image for helper containers (default: busybox)."
    ),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    quiet: bool = typer.Option(
        False, "--quiet", help="No progress and no notes on stderr; warnings and errors still."
    ),
) -> None:
    ctx.obj = Globals({"host": host, "context": context, "helper_image": helper_image_opt}, quiet)
    if ctx.invoked_subcommand is None:
        out.print(ctx.get_help(), markup=False)
        raise typer.Exit(int(ExitCode.USAGE))


def _drop_typed_ahead() -> None:
    """Discard what was typed before the question was shown: only an answer typed after
    seeing it counts (a name typed ahead while the plan was computed is no consent)."""
    try:
        import termios
    except ImportError:
        return  # no terminals of that kind here
    # Not a terminal that can be flushed: nothing was typed ahead into it.
    with contextlib.suppress(termios.error, OSError, ValueError):
        termios.tcflush(sys.stdin.fileno(), termios.TCIFLUSH)


def _confirm(question: str, yes: bool, refusal: str, details: Sequence[str] = ()) -> None:
    """Ask on the terminal unless `yes`; with no terminal and no `yes`, refuse.

    `details` (what the question is about) is shown only when there is a prompt.
    """
    if yes:
        return
    if not sys.stdin.isatty():
        raise NeedsConfirmation(f"{refusal}: no terminal to confirm on; pass --yes")
    for line in details:
        err.print(line, markup=False)
    _drop_typed_ahead()
    if not typer.confirm(question, default=False, err=True):
        raise Declined("declined; nothing was changed")


# -- snapshot --------------------------------------------------------------


@app.command("snapshot")
@_command
def snapshot_cmd(
    ctx: typer.Context,
    volumes: list[str] = typer.Argument(
        None,
        help="Volumes to snapshot, at one point in time.",
        show_default=False,
        autocompletion=complete.volumes,
    ),
    name: str | None = typer.Option(
        None, "--name", help="Name for the snapshot (unique per volume)."
    ),
    note: str | None = typer.Option(None, "--note", help="Free-text note kept with the snapshot."),
    stop: bool = typer.Option(
        False,
        "--stop",
        help="Stop and restart the containers using the volumes (application-consistent).",
    ),
    no_quiesce: bool = typer.Option(False, "--no-quiesce", help="Leave running containers alone."),
    project: str | None = typer.Option(
        None, "--project", help="Every volume of this Compose project."
    ),
    wait: float | None = typer.Option(
        None, "--wait", help="Seconds to wait for a busy volume's lock."
    ),
    stop_timeout: int | None = StopTimeout,
    as_json: bool = typer.Option(False, "--json", help="Print the new snapshots as JSON."),
) -> None:
    """Take a snapshot of each VOLUME (containers using them are paused meanwhile)."""
    if stop and no_quiesce:
        raise UsageError("--stop and --no-quiesce exclude each other")
    if stop_timeout is not None and not stop:
        raise UsageError("--stop-timeout goes with --stop")
    Meta(name, note).check_input()  # before the engine is asked anything
    rt = _globals(ctx, stop_timeout=stop_timeout).runtime(quiet=as_json)
    names = list(volumes or [])
    if project:
        names += catalog.project_volumes(rt, project)
    from voltool.engine.quiesce import Mode

    mode = Mode.STOP if stop else Mode.NONE if no_quiesce else Mode.PAUSE
    request = snapshot.SnapshotRequest(
        tuple(names), name, note, mode, wait=wait, format=rt.config.format
    )
    taken = snapshot.take(rt, request)
    made = taken.snapshots
    for line in render.held_lines(taken.held):
        rt.reporter.note(line)
    if as_json:
        render.print_json(
            [
                {
                    **render.snapshot_record(s),
                    "containers": render.held_records(taken.held_for(s.source)),
                    **render.copy_record((taken.copies or {}).get(s.id)),
                }
                for s in made
            ]
        )
        return
    for s in made:
        size = render.human_bytes(s.info.bytes if s.info else None)
        entries = s.info.entries if s.info else 0
        copy = (taken.copies or {}).get(s.id)
        how = ""
        if copy is not None:
            copied, linked = render.human_bytes(copy.bytes_copied), copy.files_linked
            how = f" ({copied} copied, {linked} unchanged files linked)"
        out.print(f"snapshot {s.id} of {s.source}: {entries} entries, {size}{how}", markup=False)


# -- list, inspect, delete -------------------------------------------------


ListVolume = Annotated[
    str | None, typer.Option("--volume", help="Only snapshots of this volume.", show_default=False)
]
ListKind = Annotated[
    str | None,
    typer.Option("--kind", help="Only snapshots of this kind: manual, import, pre-restore."),
]
ListName = Annotated[str | None, typer.Option("--name", help="Only snapshots with this name.")]
ListSince = Annotated[
    str | None,
    typer.Option(
        "--since",
        metavar="WHEN",
        help="Only snapshots taken at or after WHEN: an ISO date or time, or a duration "
        "back from now (7d, 36h).",
    ),
]
ListBefore = Annotated[
    str | None,
    typer.Option("--before", metavar="WHEN", help="Only snapshots taken before WHEN."),
]
ListQuiet = Annotated[
    bool, typer.Option("--quiet", "-q", help="Print only the ids, one per line (for xargs).")
]
ListFormat = Annotated[
    str | None,
    typer.Option("--format", metavar="table|json", help="Output format (--format json is --json)."),
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON, one record per line.")]


def _list(
    ctx: typer.Context,
    volume: str | None,
    kind: str | None,
    name: str | None,
    since: str | None,
    before: str | None,
    quiet: bool,
    fmt: str | None,
    as_json: bool,
) -> None:
    import datetime as dt

    from voltool.store.layout import KINDS
    from voltool.store.retention import parse_moment

    if fmt is not None and fmt not in ("table", "json"):
        raise UsageError(f"--format must be table or json, not {quoted(fmt)}")
    as_json = as_json or fmt == "json"
    if quiet and as_json:
        raise UsageError("-q and --json exclude each other")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)}")
    if volume is not None:
        check_volume_name(volume)
    if name is not None:
        Meta(name).check_input()
    now, tz = dt.datetime.now(dt.UTC), dt.datetime.now().astimezone().tzinfo or dt.UTC
    start = parse_moment(since, now, tz, "--since") if since else None
    end = parse_moment(before, now, tz, "--before") if before else None
    rt = _globals(ctx).runtime(quiet=as_json or quiet)
    # Filters on labels first: the metadata (a helper) is read for those that remain.
    found = [
        s
        for s in catalog.find(rt, volume)
        if (kind is None or s.kind == kind)
        and (start is None or s.created >= start)
        and (end is None or s.created < end)
    ]
    snaps = catalog.completed(rt, found)
    if name is not None:
        snaps = [s for s in snaps if s.name == name]
    if as_json:
        render.print_json([render.snapshot_record(s) for s in snaps])
    elif quiet:
        for s in snaps:
            out.print(s.id, markup=False)
    elif not snaps:
        err.print(
            "voltool: no snapshots" + (f" of {quoted(volume)}" if volume else ""), markup=False
        )
    else:
        out.print(render.snapshot_table(snaps))


def _one_volume(argument: str | None, option: str | None) -> str | None:
    if argument is not None and option is not None and argument != option:
        raise UsageError(f"VOLUME {quoted(argument)} and --volume {quoted(option)} disagree")
    return argument if argument is not None else option


@app.command("du")
@_command
def du_cmd(
    ctx: typer.Context,
    volumes: list[str] | None = typer.Argument(
        None,
        help="The volumes whose snapshots to measure (default: all).",
        autocompletion=complete.volumes,
    ),
    as_json: bool = typer.Option(False, "--json", help="Print JSON, a record per line."),
) -> None:
    """Show the disk each snapshot holds alone, and each store's total (stored snapshots)."""
    from voltool.store import format2

    rt = _globals(ctx).runtime(quiet=as_json)
    found = format2.stores(rt)
    if volumes:
        found = {k: v for k, v in found.items() if v in volumes}
    snaps = {s.id: s for s in catalog.find(rt) if s.in_store}
    rows = []
    for name, source in sorted(found.items(), key=lambda kv: kv[1]):
        used = format2.usage(rt, name, source)
        rows += [
            render.du_record(snaps[sid], alone, used)
            for sid, alone in used.alone.items()
            if sid in snaps
        ]
        rows.append({"store": name, "source": source, "total_bytes": used.total})
    if as_json:
        render.print_json(rows)
        return
    if not rows:
        err.print("voltool: no stored snapshots", markup=False)
        return
    out.print(render.du_table(rows))


@app.command("list")
@_command
def list_cmd(
    ctx: typer.Context,
    volume: str | None = typer.Argument(
        None, help="Only snapshots of this volume.", autocompletion=complete.volumes
    ),
    volume_opt: ListVolume = None,
    kind: ListKind = None,
    name: ListName = None,
    since: ListSince = None,
    before: ListBefore = None,
    quiet: ListQuiet = False,
    fmt: ListFormat = None,
    as_json: AsJson = False,
) -> None:
    """List snapshots, oldest first, filtered by volume, kind, name and time."""
    volume = _one_volume(volume, volume_opt)
    _list(ctx, volume, kind, name, since, before, quiet, fmt, as_json)


@app.command("ls")
@_command
def ls_cmd(
    ctx: typer.Context,
    ref: str | None = typer.Argument(
        None,
        metavar="[SNAPSHOT]",
        help="List this snapshot's files (default: list snapshots, as `list`).",
        show_default=False,
    ),
    path: str = typer.Argument(".", metavar="[PATH]", help="Only this directory of the snapshot."),
    recursive: bool = typer.Option(
        False, "--recursive", "-R", help="Everything below PATH, not just its entries."
    ),
    volume_opt: ListVolume = None,
    kind: ListKind = None,
    name: ListName = None,
    since: ListSince = None,
    before: ListBefore = None,
    quiet: ListQuiet = False,
    fmt: ListFormat = None,
    as_json: AsJson = False,
) -> None:
    """List a snapshot's files like `ls -l` (type, mode, owner, size, mtime, name); with no
    SNAPSHOT, list snapshots."""
    if ref is None:
        if recursive:
            raise UsageError("--recursive goes with a SNAPSHOT")
        _list(ctx, volume_opt, kind, name, since, before, quiet, fmt, as_json)
        return
    from voltool.ops import browse

    if any(x is not None for x in (kind, name, since, before)) or quiet:
        raise UsageError(
            "--kind, --name, --since, --before and -q list snapshots: give no SNAPSHOT"
        )
    if fmt is not None and fmt not in ("table", "json"):
        raise UsageError(f"--format must be table or json, not {quoted(fmt)}")
    as_json = as_json or fmt == "json"
    browse.normal_path(path)  # a bad path is a usage error before the engine is asked
    rt = _globals(ctx).runtime(quiet=True)
    snap = catalog.resolve(rt, ref, volume=volume_opt)
    for e in browse.tree(rt, snap, path, recursive):
        if as_json:
            render.print_json(e.as_dict())
        else:
            out.print(render.tree_line(e), markup=False)


@app.command("cat")
@_command
def cat_cmd(
    ctx: typer.Context,
    ref: RequiredRefArg,
    path: str = typer.Argument(..., metavar="PATH", help="A regular file of the snapshot."),
    output: str | None = typer.Option(
        None, "--output", "-o", metavar="FILE", help="Write to FILE (whole or not at all)."
    ),
    volume_opt: ListVolume = None,
) -> None:
    """Write one file of a snapshot to stdout, checked against its SHA-256 as it streams."""
    from voltool import userfile
    from voltool.ops import browse

    browse.normal_path(path)
    if output is None and sys.stdout.isatty():
        raise UsageError("refusing to write a file to a terminal: use -o FILE or redirect")
    dest = None if output is None else userfile.destination(output)
    rt = _globals(ctx).runtime(quiet=True)
    snap = catalog.resolve(rt, ref, volume=volume_opt)
    if dest is None:
        browse.cat(rt, snap, path, userfile.Output(sys.stdout.fileno(), "stdout"))
    else:
        with userfile.written(dest) as f:
            browse.cat(rt, snap, path, f)


@app.command("inspect")
@_command
def inspect_cmd(
    ctx: typer.Context,
    ref: SnapshotRef = None,
    name: SnapshotName = None,
    volume: NameVolume = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show everything about one snapshot: labels, snapshot.json, meta.json and its ETag."""
    rt = _globals(ctx).runtime(quiet=as_json)
    s = catalog.resolve(rt, ref, name, volume)
    record = render.snapshot_record(s)
    record["labels"] = rt.engine.volume(s.volume).labels
    if as_json:
        render.print_json(record)
        return
    for key in (
        "id",
        "volume",
        "source",
        "created",
        "kind",
        "state",
        "entries",
        "bytes",
        "tree_digest",
        "quiesce",
        "origin_id",
        "origin_created",
        "name",
        "note",
        "pinned",
        "etag",
        "problem",
    ):
        value = record[key]
        if value is not None and value != "":
            out.print(f"{key + ':':<13} {value}", markup=False)
    out.print("labels:", markup=False)
    for k, v in sorted(record["labels"].items()):
        out.print(f"  {k}={v}", markup=False)


@app.command("delete")
@_command
def delete_cmd(
    ctx: typer.Context,
    refs: SnapshotRefs = None,
    name: SnapshotName = None,
    volume: NameVolume = None,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    force: bool = typer.Option(False, "--force", help="Delete pinned snapshots too."),
    wait: float | None = typer.Option(
        None, "--wait", help="Seconds to wait for a busy snapshot's lock."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print each deleted snapshot as JSON, one per line."
    ),
) -> None:
    """Delete snapshots (asks first; pinned ones need --force). `rm` is the same command."""
    if bool(refs) == (name is not None):
        raise UsageError("name snapshots to delete by id (or unique id prefix), or with --name")
    rt = _globals(ctx).runtime(quiet=as_json)
    snaps = catalog.resolve_all(rt, refs) if refs else [catalog.resolve(rt, None, name, volume)]
    pinned = [s.id for s in snaps if s.pinned]
    if pinned and not force:
        raise PreconditionFailed(f"snapshot {pinned[0]} is pinned; unpin it or pass --force")
    details = [
        f"  {s.id}  {s.source}  {s.created:%Y-%m-%d %H:%M:%S}  {s.name or ''}" for s in snaps
    ]
    _confirm(f"Delete {len(snaps)} snapshot(s)?", yes, "refusing to delete", details)
    for s in snaps:
        catalog.delete(rt, s, force=force, wait=wait)
        if as_json:
            render.print_json({**render.snapshot_record(s), "deleted": True})
        else:
            out.print(f"deleted {s.id}", markup=False)


app.command("rm", hidden=True)(delete_cmd)  # docker's and restic's word for it


# -- restore, digest, diff -------------------------------------------------


@app.command("restore")
@_command
def restore_cmd(
    ctx: typer.Context,
    ref: SnapshotRef = None,
    name: SnapshotName = None,
    to: str | None = typer.Option(
        None,
        "--to",
        help="Restore into this volume (default: the snapshot's source).",
        autocompletion=complete.volumes,
    ),
    create: bool = typer.Option(
        False, "--create", help="With --to: create the volume if it does not exist."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Show the plan and the changes; change nothing."
    ),
    if_match: str | None = typer.Option(
        None,
        "--if-match",
        metavar="DIGEST",
        help="Restore only if the target's tree digest is DIGEST (see `voltool digest`).",
    ),
    offline: bool = typer.Option(
        False,
        "--offline",
        help="Keep the containers stopped for the whole restore, not just the swap.",
    ),
    no_safety: bool = typer.Option(
        False, "--no-safety-snapshot", help="Do not keep the old data as a pre-restore snapshot."
    ),
    allow_special: bool = typer.Option(
        False, "--allow-special", help="Accept device nodes and FIFOs from the snapshot."
    ),
    wait: float | None = typer.Option(
        None, "--wait", help="Seconds to wait for a busy volume's lock."
    ),
    project: str | None = typer.Option(
        None,
        "--project",
        help="With --name: restore that snapshot of every volume of this Compose project, "
        "together (one confirmation, one stop of their containers).",
    ),
    stop_timeout: int | None = StopTimeout,
    as_json: bool = typer.Option(False, "--json", help="Print the plan or the result as JSON."),
) -> None:
    """Restore a snapshot into its volume (or --to another), keeping the old data as a snapshot."""
    from voltool.ops import restore

    if create and not to:
        raise UsageError("--create goes with --to")
    if to is not None:
        check_volume_name(to)
    if if_match is not None and not _DIGEST.fullmatch(if_match):
        raise UsageError(f"--if-match {quoted(if_match)} is not a tree digest (64 hex digits)")
    if project is not None:
        if name is None or ref is not None:
            raise UsageError("--project goes with --name: the name its volumes' snapshots share")
        if to or if_match:
            raise UsageError(
                "--project restores each volume of the project into itself: "
                "--to and --if-match are for one volume"
            )
    rt = _globals(ctx, stop_timeout=stop_timeout).runtime(quiet=as_json)
    # Without a terminal the restore refuses, but only once the plan's checks
    # have passed: a wrong argument is reported as such (exit 2), not as exit 11.
    prompt = not (yes or dry_run)
    opts = restore.RestoreOptions(
        target=to,
        create=create,
        if_match=if_match,
        offline=offline,
        safety_snapshot=not no_safety,
        allow_special=allow_special,
        wait=wait,
        summary=dry_run or (prompt and sys.stdin.isatty()),
    )
    if project is not None:
        assert name is not None
        plans = restore.plan_group(rt, catalog.resolve_group(rt, name, project), opts)
    else:
        plans = [restore.plan(rt, catalog.resolve(rt, ref, name, prefer=to), opts)]
    if dry_run:
        if as_json:
            render.print_json([render.restore_plan_record(p) for p in plans])
        else:
            render.print_restore_plans(plans, project)
        return
    if prompt:
        if not sys.stdin.isatty():
            raise NeedsConfirmation("refusing to restore: no terminal to confirm on; pass --yes")
        render.print_restore_plans(plans, project, stream=err)
        _drop_typed_ahead()
        expected = project if project is not None else plans[0].target
        what = "Compose project name" if project is not None else "volume name"
        answer = typer.prompt(
            f"Type the {what} ({expected}) to restore into "
            + (f"its {len(plans)} volumes" if project is not None else "it"),
            err=True,
            default="",
            show_default=False,
        )
        if answer.strip() != expected:
            raise Declined("declined; nothing was changed")
    results = restore.execute_together(rt, plans, opts)
    for line in render.held_lines(results[0].held):
        rt.reporter.note(line)
    if as_json:
        render.print_json([render.restore_result_record(r) for r in results])
        return
    for r in results:
        out.print(f"restored snapshot {r.snapshot} into {r.target}", markup=False)
    first = results[0]
    if first.restarted:
        out.print(
            f"restarted {', '.join(first.restarted)} (down {first.downtime:.1f} s)", markup=False
        )
    kept = [r for r in results if r.safety_snapshot]
    for r in kept:
        of = f" of {r.target}" if project is not None else ""
        out.print(f"the old data{of} is pre-restore snapshot {r.safety_snapshot}", markup=False)
    for r in kept:
        out.print(f"to undo: voltool restore {r.safety_snapshot} --to {r.target}", markup=False)


@app.command("digest")
@_command
def digest_cmd(
    ctx: typer.Context,
    volume: str = typer.Argument(..., help="The volume to read.", autocompletion=complete.volumes),
) -> None:
    """Print a volume's live tree digest, as a new snapshot's (for restore --if-match)."""
    from voltool.tar import live

    rt = _globals(ctx).runtime()
    catalog.user_volume(rt, volume)
    rt.journal.refuse_pending(volume)
    digest = live.digest_of(rt, volume, rt.config.format, label=f"reading {volume}")
    out.print(digest, markup=False)


_DIFF_LISTED = 100_000  # changes a diff of a stored snapshot lists


@app.command("diff")
@_command
def diff_cmd(
    ctx: typer.Context,
    ref: SnapshotRef = None,
    volume: str | None = typer.Argument(
        None,
        help="Volume to compare with (default: the snapshot's source).",
        autocompletion=complete.volumes,
    ),
    name: SnapshotName = None,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    exit_code: bool = typer.Option(
        False, "--exit-code", help="Exit 1 if anything changed, 0 if not (as git diff does)."
    ),
) -> None:
    """Show what changed in a volume since a snapshot: entries added, changed and removed."""
    from voltool.store.manifest import diff
    from voltool.tar import live

    if name is not None and ref is not None and volume is None:
        ref, volume = None, ref  # `diff --name N VOLUME`: the one argument is the volume
    rt = _globals(ctx).runtime(quiet=as_json)
    snap = catalog.resolve(rt, ref, name, prefer=volume)
    if snap.info is None:
        raise IntegrityError(f"snapshot {snap.id} is {snap.state}: it has no manifest to compare")
    target = volume or snap.info.source
    catalog.user_volume(rt, target)
    rt.journal.refuse_pending(target)
    if snap.in_store:
        from voltool.store import staging

        # Compared next to the data; what is listed is bounded, what is counted is not.
        summary = staging.changes(rt, snap, target, keep=_DIFF_LISTED, since=True)
        changes = list(summary.first)
        if summary.total > len(changes):
            err.print(f"voltool: only the first {len(changes)} changes are listed", markup=False)
    else:
        changes = list(
            diff(
                catalog.read_manifest(rt, snap, snap.info),
                live.manifest_of(rt, target, label=f"reading {target}"),
            )
        )
    if as_json:
        render.print_json(
            {"snapshot": snap.id, "volume": target, "changes": [c.__dict__ for c in changes]}
        )
        return
    marks = {"added": "+", "removed": "-", "changed": "~"}
    for c in changes:
        extra = f"  ({', '.join(c.what)})" if c.what else ""
        out.print(f"{marks[c.kind]} {render.printable(c.path)}{extra}", markup=False)
    counts = {k: sum(1 for c in changes if c.kind == k) for k in ("added", "changed", "removed")}
    err.print(
        f"voltool: {target} since {snap.id}: " + ", ".join(f"{n} {k}" for k, n in counts.items()),
        markup=False,
    )
    if exit_code and changes:
        raise typer.Exit(int(ExitCode.DIFFERENCES))


@app.command("verify")
@_command
def verify_cmd(
    ctx: typer.Context,
    refs: SnapshotRefs = None,
    all_: bool = typer.Option(False, "--all", help="Every snapshot."),
    as_json: bool = typer.Option(False, "--json", help="Print the reports as JSON."),
    remote: str | None = typer.Option(
        None,
        "--remote",
        metavar="NAME",
        help="Check the repository of remote NAME instead (restic check).",
    ),
    read_data_subset: str | None = typer.Option(
        None,
        "--read-data-subset",
        metavar="PART",
        help="With --remote: read and check this part of the data too (10%, 1/5, or all).",
    ),
) -> None:
    """Re-read snapshots through the engine and check every entry against the manifest."""
    from voltool.ops import verify

    if remote is not None:
        from voltool.cli import remote_cli

        if refs or all_:
            raise UsageError("--remote checks the whole repository: name no snapshots")
        rt = _globals(ctx).runtime(quiet=as_json)
        remote_cli.verify_remote(rt, remote, read_data_subset, as_json)
        return
    if read_data_subset is not None:
        raise UsageError("--read-data-subset goes with --remote")
    if bool(refs) == all_:
        raise UsageError("name snapshots to verify, or pass --all")
    rt = _globals(ctx).runtime(quiet=as_json)
    snaps = catalog.list_snapshots(rt) if all_ else catalog.resolve_all(rt, refs or [])
    reports = [verify.verify(rt, s) for s in snaps if s.state != "incomplete" or not all_]
    if as_json:
        render.print_json([render.verify_record(r) for r in reports])
    else:
        for r in reports:
            render.print_verify_report(r)
    failed = [r for r in reports if not r.ok]
    if failed:
        raise IntegrityError(f"{len(failed)} of {len(reports)} snapshot(s) failed verification")


# -- export, import --------------------------------------------------------


@app.command("export")
@_command
def export_cmd(
    ctx: typer.Context,
    ref: SnapshotRef = None,
    name: SnapshotName = None,
    output: str = typer.Option(
        "-",
        "--output",
        "-o",
        metavar="FILE",
        help="Write to FILE (it appears whole or not at all), a device or a FIFO; "
        "'-' (the default) is stdout.",
    ),
    compress: str | None = typer.Option(
        None,
        "--compress",
        metavar="zstd|gzip|none",
        help="Compression (default: from FILE's suffix; zstd for stdout, devices and FIFOs).",
        show_default=False,
    ),
    wait: float | None = typer.Option(
        30.0, "--wait", help="Seconds to wait for the snapshot's lock."
    ),
    volume: NameVolume = None,
) -> None:
    """Write a snapshot to one self-describing file: metadata first, then the data."""
    from voltool import userfile
    from voltool.ops import export
    from voltool.tar import compression

    to_stdout = output == "-"
    dest = None if to_stdout else userfile.destination(output)
    kind = compression.choose(compress, None if to_stdout else output)
    if (
        dest is not None
        and dest.is_file
        and compress is None
        and compression.from_filename(output) is None
    ):
        raise UsageError(
            f"{output} does not end in an archive suffix "
            f"({', '.join(compression.known_suffixes())}); name one, or give --compress"
        )
    if to_stdout and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal: use -o FILE or redirect")
    rt = _globals(ctx).runtime()
    snap = catalog.resolve(rt, ref, name, volume)
    if dest is None:
        result = export.export(rt, snap, userfile.Output(sys.stdout.fileno(), "stdout"), kind, wait)
    else:
        result = export.export_file(rt, snap, dest, kind, wait)
    info = snap.info
    assert info is not None
    where = result.path or "stdout"
    err.print(
        f"voltool: exported {snap.id} ({info.entries} entries, "
        f"{render.human_bytes(info.bytes)}) to {where}: "
        f"{render.human_bytes(result.written)} {result.compression.value}",
        markup=False,
    )


@app.command("import")
@_command
def import_cmd(
    ctx: typer.Context,
    file: str = typer.Argument(
        ..., metavar="FILE", help="An export, or a plain tar of a tree; '-' reads stdin."
    ),
    volume: str | None = typer.Option(
        None,
        "--volume",
        help="File the snapshot under this volume name "
        "(default: the export's source; 'imported' for a plain tar).",
    ),
    name: str | None = typer.Option(None, "--name", help="Name for the new snapshot."),
    max_bytes: str = typer.Option(
        "1T", "--max-bytes", metavar="SIZE", help="Refuse archives with more content (1T, 500M)."
    ),
    max_entries: int = typer.Option(
        DEFAULT_MAX_ENTRIES, "--max-entries", min=1, help="Refuse archives with more entries."
    ),
    allow_special: bool = typer.Option(
        False, "--allow-special", help="Accept device nodes and FIFOs."
    ),
    wait: float | None = typer.Option(
        30.0, "--wait", help="Seconds to wait for the store's lock (format 2)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the new snapshot as JSON."),
) -> None:
    """Import an archive as a new snapshot (kind import), checking every entry."""
    from voltool import userfile
    from voltool.ops import importer
    from voltool.tar.validate import Limits

    limits = Limits(max_entries, parse_size(max_bytes, "--max-bytes"), allow_special)
    rt = _globals(ctx).runtime(quiet=as_json)
    if file == "-":
        if sys.stdin.isatty():
            raise UsageError("refusing to read an archive from a terminal: name a FILE or pipe one")
        req = importer.ImportRequest(
            volume, name, limits, "importing stdin", format=rt.config.format, wait=wait
        )
        made = importer.import_archive(rt, sys.stdin.buffer, req)
    else:
        path = Path(file)
        try:
            f = open(path, "rb")  # noqa: SIM115 (closed below, after the import)
        except FileNotFoundError:
            raise NotFound(f"no file {quoted(file)}") from None
        except IsADirectoryError:
            raise UsageError(f"{file} is a directory") from None
        except OSError as e:
            raise userfile.error(e, file, "read") from None
        with f:
            total = os.fstat(f.fileno()).st_size
            req = importer.ImportRequest(
                volume,
                name,
                limits,
                f"importing {path.name}",
                total,
                format=rt.config.format,
                wait=wait,
            )
            made = importer.import_archive(rt, cast(BinaryIO, userfile.Input(f, file)), req)
    if as_json:
        render.print_json(render.snapshot_record(made))
        return
    assert made.info is not None
    out.print(
        f"imported snapshot {made.id} of {made.source}: {made.info.entries} entries, "
        f"{render.human_bytes(made.info.bytes)}",
        markup=False,
    )
    out.print(f"restore it with: voltool restore {made.id} --to VOLUME", markup=False)


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40, "P": 2**50}
_SIZE = re.compile(r"([0-9]+) ?([KMGTP]?)(?:I?B)?", re.IGNORECASE)


def parse_size(text: str, option: str) -> int:
    """Bytes from "1024", "500M", "2G", "1TiB" (binary units); UsageError otherwise."""
    m = _SIZE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"{option}: {quoted(text)} is not a size (for example 500M, 2G, 1T)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


# -- pin, unpin, edit, prune, config ---------------------------------------

IfMatch = Annotated[
    str | None,
    typer.Option("--if-match", metavar="ETAG", help="Change it only if its ETag is still ETAG."),
]
Wait = Annotated[float | None, typer.Option("--wait", help="Seconds to wait for a busy lock.")]
RequiredRef = Annotated[
    str,
    typer.Argument(
        metavar="SNAPSHOT",
        help="Snapshot id or unique id prefix.",
        autocompletion=complete.snapshots,
    ),
]


def _edit(
    ctx: typer.Context,
    ref: str,
    change: Any,
    if_match: str | None,
    as_json: bool,
    wait: float | None,
) -> None:
    from voltool.store import metadata

    rt = _globals(ctx).runtime(quiet=True)
    snap = catalog.resolve(rt, ref)
    done = metadata.update(
        rt, snap, change, if_match, wait if wait is not None else metadata.EDIT_WAIT
    )
    record = render.snapshot_record(done)
    if as_json:
        render.print_json(record)
    else:
        out.print(
            f"{done.id}: name={record['name'] or '-'} pinned={'yes' if done.pinned else 'no'} "
            f"etag={record['etag']}",
            markup=False,
        )


def _pin_command(pinned: bool, doc: str) -> Callable[..., None]:
    """pin and unpin: the same command but for the value they set."""

    def command(
        ctx: typer.Context,
        ref: RequiredRef,
        if_match: IfMatch = None,
        wait: Wait = None,
        as_json: bool = typer.Option(False, "--json", help="Print the snapshot as JSON."),
    ) -> None:
        _edit(ctx, ref, lambda m: dataclasses.replace(m, pinned=pinned), if_match, as_json, wait)

    command.__doc__ = doc
    return _command(command)


app.command("pin")(
    _pin_command(True, "Pin a snapshot: prune never removes it, delete needs --force.")
)
app.command("unpin")(_pin_command(False, "Unpin a snapshot."))


@app.command("edit")
@_command
def edit_cmd(
    ctx: typer.Context,
    ref: RequiredRef,
    name: str | None = typer.Option(
        None, "--name", help='New name (unique per volume); "" removes it.'
    ),
    note: str | None = typer.Option(None, "--note", help='New note; "" removes it.'),
    if_match: IfMatch = None,
    wait: Wait = None,
    as_json: bool = typer.Option(False, "--json", help="Print the snapshot as JSON."),
) -> None:
    """Change a snapshot's name or note."""
    if name is None and note is None:
        raise UsageError("give --name or --note (or both)")

    def change(m: Any) -> Any:
        if name is not None:
            m = dataclasses.replace(m, name=name or None)
        if note is not None:
            m = dataclasses.replace(m, note=note or None)
        return m

    _edit(ctx, ref, change, if_match, as_json, wait)


@app.command("prune")
@_command
def prune_cmd(
    ctx: typer.Context,
    volumes: list[str] = typer.Argument(
        None,
        help="Only snapshots of these volumes.",
        show_default=False,
        autocompletion=complete.volumes,
    ),
    keep_last: int = typer.Option(0, "--keep-last", help="Keep the N newest.", min=0),
    keep_hourly: int = typer.Option(
        0, "--keep-hourly", help="Keep the newest of each of the last N hours that have one.", min=0
    ),
    keep_daily: int = typer.Option(0, "--keep-daily", help="... days.", min=0),
    keep_weekly: int = typer.Option(0, "--keep-weekly", help="... ISO weeks.", min=0),
    keep_monthly: int = typer.Option(0, "--keep-monthly", help="... months.", min=0),
    keep_yearly: int = typer.Option(0, "--keep-yearly", help="... years.", min=0),
    keep_within: str | None = typer.Option(
        None,
        "--keep-within",
        metavar="DURATION",
        help="Keep all younger than DURATION: y, m (months), w, d, h, as in 36h, 2w, 1y6m.",
    ),
    kind: str | None = typer.Option(
        None, "--kind", help="Only snapshots of this kind: manual, import, pre-restore."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Print the plan with its reasons; remove nothing."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = typer.Option(
        False, "--json", help="Print the plan (and what was removed) as JSON."
    ),
    include_named: bool = typer.Option(
        False,
        "--include-named",
        help="Let the policy remove named snapshots too (kept by default).",
    ),
    remote: str | None = typer.Option(
        None,
        "--remote",
        metavar="NAME",
        help="Prune the snapshots pushed to remote NAME instead (restic forget, then prune).",
    ),
) -> None:
    """Remove snapshots by a retention policy; pinned ones are always kept."""
    import datetime as dt

    from voltool.ops import prune
    from voltool.store import retention
    from voltool.store.layout import KINDS

    if kind is not None and kind not in KINDS:
        raise UsageError(f"--kind must be one of {', '.join(KINDS)}")
    for v in volumes or []:
        check_volume_name(v)
    cli = retention.Policy(
        keep_last,
        keep_hourly,
        keep_daily,
        keep_weekly,
        keep_monthly,
        keep_yearly,
        retention.parse_duration(keep_within) if keep_within else None,
    )
    g = _globals(ctx)
    rt = g.runtime(quiet=as_json)
    ps = prune.policies(rt.config, None if cli.empty else cli, kind, include_named)
    now = dt.datetime.now(dt.UTC)
    tz = dt.datetime.now().astimezone().tzinfo or dt.UTC
    if remote is not None:
        from voltool.cli import remote_cli

        remote_cli.prune_remote(rt, remote, ps, list(volumes or []), now, tz, dry_run, yes, as_json)
        return
    items = prune.plan(rt, ps, list(volumes or []), now, tz)

    def remove(doomed: list[prune.PruneItem]) -> tuple[list[str], list[str]]:
        result = prune.execute(rt, items)
        return list(result.removed), list(result.failed)

    carry_out_prune(items, remove, dry_run, yes, as_json)


def carry_out_prune(
    items: list[Any],
    remove: Callable[[list[Any]], tuple[list[str], list[str]]],
    dry_run: bool,
    yes: bool,
    as_json: bool,
    where: str = "",
    leftovers: int = 0,
) -> None:
    """Show a prune plan (`items`: voltool.ops.prune's PruneItems), ask, and carry it out
    with `remove` (the items to remove -> ids removed, failures); `where`: " from remote
    NAME"; `leftovers`: what else `remove` takes away (a remote's unfinished pushes)."""
    doomed = [i for i in items if i.remove]
    if as_json and dry_run:
        render.print_json(render.prune_records(items, removed=None))
        return
    if not as_json and items:
        render.print_prune_plan(items, stream=out if dry_run else err)
    if leftovers and not as_json:
        (out if dry_run else err).print(f"{leftovers} unfinished push(es) to remove", markup=False)
    if dry_run or not (doomed or leftovers):
        if not as_json and not doomed:
            out.print("nothing to remove", markup=False)
        if as_json:
            render.print_json(render.prune_records(items, removed=[]))
        return
    what = " and ".join(
        w
        for w in (
            f"{len(doomed)} snapshot(s)" if doomed else "",
            f"{leftovers} unfinished push(es)" if leftovers else "",
        )
        if w
    )
    _confirm(f"Remove {what}{where}?", yes, "refusing to prune")
    removed, failed = remove(doomed)
    if as_json:
        render.print_json(render.prune_records(items, removed=removed))
    else:
        for sid in removed:
            out.print(f"removed {sid}{where}", markup=False)
    if failed:
        raise Busy(f"{len(failed)} snapshot(s) could not be removed; first: {failed[0]}")


@app.command("migrate")
@_command
def migrate_cmd(
    ctx: typer.Context,
    refs: SnapshotRefs = None,
    all_: bool = typer.Option(False, "--all", help="Every format-1 snapshot."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would move; move nothing."),
    wait: float | None = typer.Option(
        30.0, "--wait", help="Seconds to wait for a busy snapshot's or store's lock."
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print each snapshot (moved, or that would move) as JSON, one a line."
    ),
) -> None:
    """Move format-1 snapshot volumes into their volumes' stores (format 2), each checked
    before its snapshot volume is removed."""
    from voltool.ops import migrate
    from voltool.store import format2

    if bool(refs) == all_:
        raise UsageError("name snapshots to migrate, or pass --all")
    rt = _globals(ctx).runtime(quiet=as_json)
    snaps = migrate.candidates(rt, None if all_ else list(refs or []))
    if dry_run:
        for s in snaps:
            to = format2.store_name(s.source)
            if as_json:
                render.print_json({**render.snapshot_record(s), "to": to, "moved": False})
            else:
                out.print(f"would move {s.id} ({s.volume}) into {to}", markup=False)
        if not snaps and not as_json:
            out.print("nothing to migrate", markup=False)
        return
    for s in snaps:
        moved = migrate.migrate(rt, s, wait)
        if as_json:
            record = render.snapshot_record(moved.new)
            render.print_json({**record, "from": moved.old.volume, "moved": True})
        else:
            out.print(f"moved {s.id} from {s.volume} into {moved.new.volume}", markup=False)
    if not snaps and not as_json:
        out.print("nothing to migrate", markup=False)


# Copies off the machine (`remote ...`, `push`, `pull`): commands of their own module, which
# registers them on `app` when imported.
from voltool.cli import remote_cli as _remote_cli  # noqa: E402, F401

config_app = typer.Typer(help="Show the effective configuration.")
app.add_typer(config_app, name="config")


@config_app.callback(invoke_without_command=True)
def _config_main(ctx: typer.Context) -> None:
    """Show the effective configuration."""
    if ctx.invoked_subcommand is None:  # like `git remote`: the help, and success
        out.print(ctx.get_help(), markup=False)


@config_app.command("show")
@_command
def config_show_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print every setting and retention policy in effect, and where each comes from."""
    from voltool.ops import prune

    cfg = _globals(ctx).config()
    ps = prune.policies(cfg, None, None)
    settings = {k: {"value": cfg.values[k], "source": cfg.sources[k]} for k in cfg.values}
    policies = {
        "pre-restore": {"policy": ps.pre_restore[0].describe(), "source": ps.pre_restore[1]}
    }
    if ps.for_all:
        policies["all volumes"] = {"policy": ps.for_all[0].describe(), "source": ps.for_all[1]}
    for v, (p, where) in sorted(ps.per_volume.items()):
        policies[f"volume {v}"] = {"policy": p.describe(), "source": where}
    policies["named snapshots"] = {
        "policy": "kept (reason named); prune --include-named lets the policy decide",
        "source": "the default",
    }
    if as_json:
        render.print_json(
            {"file": str(cfg.file) if cfg.file else None, "settings": settings, "prune": policies}
        )
        return
    out.print(
        f"config file: {cfg.file or '(none) ' + str(config.config_file_path())}", markup=False
    )
    for key, setting in settings.items():
        out.print(f"{key} = {_toml_value(setting['value'])}  ({setting['source']})", markup=False)
    for scope, rule in policies.items():
        out.print(f"prune {scope}: {rule['policy']}  ({rule['source']})", markup=False)


def _toml_value(value: object) -> str:
    """A setting as the config file would spell it (never a Python repr)."""
    if value is None:
        return "(not set)"
    return json.dumps(value)


# -- doctor, helper, recover -----------------------------------------------


@app.command("doctor")
@_command
def doctor_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Check the engine, the helper image, the state directory, and look for leftovers."""
    from voltool.cli.doctor import run_checks

    checks = run_checks(_globals(ctx).overrides)
    if as_json:
        render.print_json([c.__dict__ for c in checks])
    else:
        marks = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}
        for c in checks:
            line = f"{marks[c.status]}  {c.name}: {c.detail}"
            out.print(
                line + (f"  -> run: {c.fix}" if c.fix and c.status != "ok" else ""), markup=False
            )
    if any(c.status == "fail" for c in checks):
        engine_down = any(c.name == "engine" and c.status == "fail" for c in checks)
        raise typer.Exit(int(ExitCode.ENGINE if engine_down else ExitCode.ERROR))


@app.command("helper")
@_command
def helper_cmd(
    ctx: typer.Context,
    build: bool = typer.Option(
        False,
        "--build",
        help="Build the helper image from a static busybox, and the agent image, now.",
    ),
    busybox: str | None = typer.Option(
        None, "--busybox", help="Path of the static busybox binary."
    ),
) -> None:
    """Show the helper and agent images, or build them (offline if need be) with --build."""
    from voltool.engine import agent_image
    from voltool.engine.labels import IMAGE_ORIGIN

    g = _globals(ctx)
    if busybox:
        g.overrides["busybox"] = busybox
    cfg = g.config()
    engine = connect_engine(cfg)
    if build:
        tag = helper_image.build(engine, cfg.busybox)
        out.print(f"helper image {tag} is built from {cfg.busybox}", markup=False)
        agent = agent_image.ensure(engine, cfg.busybox, ConsoleReporter(g.quiet))
        info = engine.image(agent)
        origin = info.labels.get(IMAGE_ORIGIN, "?")
        out.print(
            f"agent image {agent} ({origin}, {info.size / 1e6:.0f} MB) runs the agent",
            markup=False,
        )
        return
    found = helper_image.status(engine, cfg.helper_image, cfg.busybox)
    out.print(f"helper image: {found.how}", markup=False)
    out.print(f"agent image: {agent_image.status(engine, cfg.busybox).how}", markup=False)


@app.command("recover")
@_command
def recover_cmd(
    ctx: typer.Context,
    volumes: list[str] = typer.Argument(
        None,
        help="Only what concerns these volumes (default: everything).",
        autocompletion=complete.volumes,
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Say what would be done; change nothing."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the actions as JSON."),
    abandoned: list[str] = typer.Option(
        [],
        "--abandoned",
        metavar="OP",
        help="Treat operation OP as dead though its process cannot be checked from here "
        "(another host or container). Use with care: only once that process is gone.",
    ),
) -> None:
    """Finish or roll back interrupted operations, and remove what dead processes left."""
    for op in abandoned:
        if not is_valid_id(op):
            raise UsageError(f"invalid operation id {quoted(op)}: 16 lowercase hex digits")
    rt = _globals(ctx).runtime(quiet=as_json)
    scope = recover.Scope(frozenset(volumes)) if volumes else recover.EVERYTHING
    report = recover.recover(rt, dry_run=dry_run, scope=scope, abandoned=frozenset(abandoned))
    if as_json:
        render.print_json({"dry_run": dry_run, "actions": report.done, "failures": report.failures})
    else:
        if not report.done and not report.failures:
            out.print("nothing to recover", markup=False)
        for a in report.done:
            out.print(("would " if dry_run else "") + a, markup=False)
        for f in report.failures:
            rt.reporter.warn(f)
    if report.failures:
        raise PendingOperation(
            f"{len(report.failures)} of the steps above could not be done; "
            "everything else was recovered. Run `voltool recover` again once the cause is fixed"
            if not dry_run
            else f"{len(report.failures)} interrupted operation(s) cannot be planned"
        )


# -- entry point -----------------------------------------------------------


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(argv: list[str] | None = None) -> int:
    """Run the CLI with `argv`; returns the exit code (for tests and `main`)."""
    try:
        rv = app(args=argv, prog_name="voltool", standalone_mode=False)
    except typer.Abort:
        err.print("voltool: error: interrupted", markup=False)
        return int(ExitCode.INTERRUPTED)
    except Exception as e:
        # Typer's parser errors (its vendored click's UsageError and kin) are not
        # public types; they are known by their shape: format_message() and exit_code.
        if not (hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int)):
            raise
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        err.print(f"voltool: error: {' '.join(e.format_message().split())}{hint}", markup=False)
        return int(getattr(e, "exit_code"))  # noqa: B009 (a duck-typed attribute)
    return rv if isinstance(rv, int) else 0


def main() -> NoReturn:
    signal.signal(signal.SIGTERM, _sigterm)
    sys.exit(run())
