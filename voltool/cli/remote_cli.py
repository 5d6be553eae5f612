"""The commands of copies off the machine: `remote ...`, `push`, `pull`, and what
`prune --remote` and `verify --remote` do (voltool.ops.remote does the work).

Registered on the one `voltool` app (voltool/cli/app.py imports this module).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

import typer

from voltool import config, remotes
from voltool.cli import render
from voltool.cli.app import _command, _confirm, _globals, app, carry_out_prune
from voltool.cli.render import err, out
from voltool.errors import IntegrityError, UsageError
from voltool.ops import prune
from voltool.ops import pull as pull_ops
from voltool.ops import push as push_ops
from voltool.ops import remote as ops
from voltool.runtime import Runtime
from voltool.words import quoted

remote_app = typer.Typer(
    help="Restic repositories to copy snapshots to (the config file's [remotes.NAME]).",
    no_args_is_help=True,
)
app.add_typer(remote_app, name="remote")

_SUBSET = re.compile(r"^(all|\d{1,3}(\.\d+)?%|\d+/\d+)$")
RemoteName = typer.Argument(..., metavar="NAME", help="The remote's name.")
RemoteOption = typer.Option(..., "--remote", "-r", metavar="NAME", help="The remote to use.")


@remote_app.command("add")
@_command
def remote_add_cmd(
    name: str = RemoteName,
    repo: str = typer.Argument(
        ...,
        metavar="REPO",
        help="A directory of the engine's host (/srv/backup), or rest:..., s3:..., b2:..., "
        "azure:..., swift:...",
    ),
    password_file: str | None = typer.Option(
        None, "--password-file", help="A file holding the repository's password."
    ),
    password_command: str | None = typer.Option(
        None, "--password-command", help="A command that prints the password."
    ),
    env_file: str | None = typer.Option(
        None,
        "--env-file",
        help="A file of NAME=value lines for the backend (AWS_ACCESS_KEY_ID=..., ...).",
    ),
    network: str | None = typer.Option(
        None,
        "--network",
        help="The Docker network restic's helper joins (default: none for a directory, "
        "host otherwise).",
    ),
) -> None:
    """Name a restic repository in the config file (it is not created: `remote init`)."""
    remote = remotes.Remote(name, repo, password_file, password_command, env_file, network)
    remotes.add(config.config_file_path(), remote)
    out.print(f"added remote {name} ({remote.shown})", markup=False)


@remote_app.command("ls")
@_command
def remote_ls_cmd(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List the remotes (passwords are never shown, only where they come from)."""
    found = remotes.from_config(_globals(ctx).config())
    records = [_remote_record(r) for r in found.values()]
    if as_json:
        render.print_json(records)
        return
    if not records:
        out.print("no remotes: add one with `voltool remote add NAME REPO`", markup=False)
    for r in found.values():
        secret = "password file" if r.password_file else "password command"
        env = ", env file" if r.env_file else ""
        out.print(f"{r.name}\t{r.shown}\t({secret}{env}, network {r.helper_network})", markup=False)


def _remote_record(r: remotes.Remote) -> dict[str, Any]:
    return {
        "name": r.name,
        "repo": r.shown,
        "password_file": r.password_file,
        "password_command": r.password_command is not None,
        "env_file": r.env_file,
        "network": r.helper_network,
    }


@remote_app.command("rm")
@_command
def remote_rm_cmd(name: str = RemoteName) -> None:
    """Remove a remote from the config file (its repository and what it holds stay)."""
    remotes.remove(config.config_file_path(), name)
    out.print(f"removed remote {name} from the config file", markup=False)


@remote_app.command("init")
@_command
def remote_init_cmd(ctx: typer.Context, name: str = RemoteName) -> None:
    """Create the remote's restic repository."""
    rt = _globals(ctx).runtime()
    remote = remotes.get(rt.config, name)
    ops.init(rt, remote)
    out.print(f"created the repository of remote {name} at {remote.shown}", markup=False)


@remote_app.command("unlock")
@_command
def remote_unlock_cmd(
    ctx: typer.Context,
    name: str = RemoteName,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """Remove every lock from the remote's repository (one a killed restic left: restic
    cannot tell that a helper's restic is gone, and keeps such a lock for 30 minutes)."""
    rt = _globals(ctx).runtime()
    remote = remotes.get(rt.config, name)
    _confirm(
        f"Remove every lock of remote {name}? Only while nothing else uses its repository.",
        yes,
        "refusing to unlock",
    )
    ops.unlock(rt, remote)
    out.print(f"removed the locks of remote {name}", markup=False)


@remote_app.command("snapshots")
@_command
def remote_snapshots_cmd(
    ctx: typer.Context,
    name: str = RemoteName,
    volume: str | None = typer.Option(None, "--volume", help="Only this volume's snapshots."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON, a snapshot a line."),
) -> None:
    """List the snapshots pushed to a remote."""
    rt = _globals(ctx).runtime(quiet=as_json)
    found = ops.snapshots(rt, remotes.get(rt.config, name), volume)
    if as_json:
        render.print_json([ops.as_json(s) for s in found])
        return
    if not found:
        out.print("no snapshots", markup=False)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for col in ("ID", "VOLUME", "CREATED", "KIND", "NAME", "SIZE", "PINNED"):
        table.add_column(col, no_wrap=True)
    for s in found:
        table.add_row(
            s.id[:12],
            s.source,
            f"{s.created.astimezone():%Y-%m-%d %H:%M:%S}",
            s.kind,
            s.name or "",
            render.human_bytes(s.bytes),
            "yes" if s.pinned else "",
        )
    out.print(table)


@app.command("push")
@_command
def push_cmd(
    ctx: typer.Context,
    refs: list[str] = typer.Argument(
        None,
        metavar="[SNAPSHOT|VOLUME]...",
        help="Snapshot ids (or unique prefixes), or volumes: all of their snapshots.",
        show_default=False,
    ),
    remote: str = RemoteOption,
    all_: bool = typer.Option(False, "--all", help="Every snapshot."),
    as_json: bool = typer.Option(False, "--json", help="Print a record a snapshot."),
) -> None:
    """Copy snapshots to a remote (restic, next to the data); ones already there are skipped."""
    rt = _globals(ctx).runtime(quiet=as_json)
    target = remotes.get(rt.config, remote)
    chosen = push_ops.pushable(rt, refs or [], all_)
    result = push_ops.push(rt, target, chosen)
    if as_json:
        render.print_json([_pushed_record(p) for p in result.pushed])
    else:
        for p in result.pushed:
            if p.skipped:
                out.print(f"{p.snapshot.id}  already on {remote}", markup=False)
            else:
                out.print(
                    f"{p.snapshot.id}  pushed to {remote} ({p.files_new} new and "
                    f"{p.files_changed} changed files, {render.human_bytes(p.data_added)} added, "
                    f"{p.seconds:.1f} s)",
                    markup=False,
                )
        if not result.pushed and not result.failed:
            out.print("nothing to push", markup=False)
    for line in result.failed:
        err.print(f"voltool: push failed: {line}", markup=False)
    if result.failed:
        raise IntegrityError(f"{len(result.failed)} snapshot(s) could not be pushed")


def _pushed_record(p: push_ops.Pushed) -> dict[str, Any]:
    return {
        "id": p.snapshot.id,
        "volume": p.snapshot.source,
        "restic_id": p.restic_id,
        "skipped": p.skipped,
        "files_new": p.files_new,
        "files_changed": p.files_changed,
        "data_added": p.data_added,
        "seconds": round(p.seconds, 3),
    }


@app.command("pull")
@_command
def pull_cmd(
    ctx: typer.Context,
    remote: str = typer.Argument(..., metavar="REMOTE", help="The remote to pull from."),
    ref: str = typer.Argument(..., metavar="SNAPSHOT", help="Its voltool id, or a unique prefix."),
    volume: str | None = typer.Option(
        None, "--volume", help="File it under this volume (default: the one it was taken of)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the new snapshot as JSON."),
) -> None:
    """Bring a snapshot back from a remote as a local snapshot, checked against its manifest."""
    rt = _globals(ctx).runtime(quiet=as_json)
    snap = pull_ops.pull(rt, remotes.get(rt.config, remote), ref, volume)
    if as_json:
        render.print_json(render.snapshot_record(snap))
    else:
        assert snap.info is not None
        out.print(
            f"pulled {snap.info.origin_id} from {remote} as snapshot {snap.id} of "
            f"{snap.source} ({render.human_bytes(snap.info.bytes)})",
            markup=False,
        )


def prune_remote(
    rt: Runtime,
    name: str,
    ps: prune.Policies,
    volumes: list[str],
    now: dt.datetime,
    tz: dt.tzinfo,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """`prune --remote NAME`: the same rules and reasons, on the snapshots this engine pushed
    to the remote, by the keep options given (the config file's policies are this machine's
    disk's, not the remote's)."""
    remote = remotes.get(rt.config, name)
    if ps.cli is None:
        raise UsageError(
            "prune --remote needs keep options (--keep-daily 30, ...): the config file's "
            "policies are for this machine's snapshots"
        )
    only_cli = dataclasses.replace(ps, for_all=None, per_volume={}, pre_restore=ps.cli)
    view = ops.prune_view(rt, remote, now)
    if volumes:
        view = dataclasses.replace(
            view, leftovers=[r for r in view.leftovers if r.source in volumes]
        )
    items = prune.plan_of(view.snapshots, only_cli, volumes, now, tz)

    def remove(doomed: list[prune.PruneItem]) -> tuple[list[str], list[str]]:
        done = ops.forget(rt, remote, view, [i.snapshot.id for i in doomed])
        return list(done.removed), []

    carry_out_prune(
        items, remove, dry_run, yes, as_json, f" from remote {name}", len(view.leftovers)
    )


def verify_remote(rt: Runtime, name: str, subset: str | None, as_json: bool) -> None:
    """`verify --remote NAME`: restic's check; IntegrityError (exit 6) if it finds damage."""
    if subset is not None and not _SUBSET.fullmatch(subset):
        raise UsageError(f"--read-data-subset must be like 10%, 1/5 or all, not {quoted(subset)}")
    result = ops.check(rt, remotes.get(rt.config, name), "100%" if subset == "all" else subset)
    if as_json:
        render.print_json({"remote": name, "ok": result.ok, "said": result.said})
    else:
        out.print(f"remote {name}: {'ok' if result.ok else 'DAMAGED'}: {result.said}", markup=False)
    if not result.ok:
        raise IntegrityError(f"the repository of remote {name} is damaged: {result.said}")
