"""Running the agent (voltool.agent) next to the data, and reading what it says.

The agent runs in a started helper of the agent image (voltool.engine.agent_image),
with no network, mounting only the volumes involved. Its manifest goes to a
file inside one of them (never through voltool); voltool reads only its stderr:
JSON lines of errors, warnings and one summary (voltool/agent/report.py).
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, fields
from typing import Any

from voltool.engine.client import Mount
from voltool.errors import EngineError, IntegrityError, NoSpace
from voltool.runtime import Runtime
from voltool.sh import program
from voltool.words import quoted

MODULE = "voltool_agent"  # the agent's package name inside the agent image


@dataclass(frozen=True)
class Summary:
    """The agent's counts for one run (voltool/agent/report.py, Counts)."""

    entries: int = 0
    files: int = 0
    bytes_hashed: int = 0
    bytes_copied: int = 0
    bytes_linked: int = 0
    files_linked: int = 0
    vanished: int = 0
    unstable: int = 0
    errors: int = 0
    mismatches: int = 0
    digest: str = ""
    started_ns: int = 0
    peak_rss_kib: int = 0  # the agent's own peak resident set (0: not said)
    settled_ns: int = 0  # copy: the ctime of the last change it made (0: not said)
    seal: str = ""  # copy --seal: what it wrote, as a scan of it finds it (see the agent)
    root: str = ""  # copy --seal: DEV:INO of the directory it made

    @property
    def content_bytes(self) -> int:
        """The bytes of the files of the tree it wrote: copied or linked."""
        return self.bytes_copied + self.bytes_linked

    @classmethod
    def parse(cls, line: dict[str, Any]) -> Summary:
        values = {}
        for f in fields(cls):
            v = line.get(f.name, f.default)
            if f.name == "digest":
                # Every command's but `settled`'s and `mend`'s, which hash nothing.
                if line.get("command") not in ("settled", "mend") and not (
                    isinstance(v, str) and len(v) == 64
                ):
                    raise EngineError("the agent's summary has no tree digest")
            elif f.name in ("seal", "root"):
                if not isinstance(v, str) or len(v) > 100:
                    raise EngineError(f"the agent's summary has a malformed {f.name}")
            elif not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise EngineError(f"the agent's summary has a malformed {f.name}")
            values[f.name] = v
        return cls(**values)


@dataclass(frozen=True)
class AgentResult:
    code: int
    summary: Summary | None
    errors: tuple[str, ...]  # one line each: what could not be read or written, and why
    warnings: tuple[str, ...]
    fatal: str | None
    stdout: bytes  # what it printed, when not sent to a file


def run(
    rt: Runtime,
    image: str,
    op: str,
    mounts: list[Mount],
    args: list[str],
    script: str | None = None,
) -> AgentResult:
    """Run the agent in a helper of `image` and read what it says on stderr.

    By default the helper runs voltool/sh/agent-run.sh, whose first argument is
    a path inside the helper that receives the agent's stdout (whole, or not at
    all; "-": kept in `stdout`) and the rest the agent's. `script`: another
    program of voltool.sh that runs the agent its own way.
    """
    program_text = script if script is not None else program("agent-run")
    result = rt.engine.run(
        image, mounts, rt.helper_labels(op), program_text, args, _test_environment()
    )
    summary = None
    fatal = None
    errors: list[str] = []
    warnings: list[str] = []
    for raw in result.stderr.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            errors.append(raw.decode(errors="replace")[:300])  # the interpreter's own words
            continue
        if not isinstance(line, dict):
            continue
        event = line.get("event")
        if event == "summary":
            summary = Summary.parse(line)
        elif event == "fatal":
            fatal = str(line.get("message", "?"))
        elif event == "error":
            errors.append(f"{_path(line.get('path'))}: {line.get('op')}: {line.get('message')}")
        elif event == "warning":
            warnings.append(f"{_path(line.get('path'))}: {line.get('what')}")
    if summary is not None:
        _log_peak_rss(summary, script or "agent-run", args)
    return AgentResult(
        result.exit_code, summary, tuple(errors), tuple(warnings), fatal, result.stdout
    )


# How the agent's fatal message says that the filesystem it writes to is full: it
# spells the OSError, whose text begins with its errno.
_FULL = tuple(f"[Errno {n}]" for n in (errno.ENOSPC, errno.EDQUOT))


def checked(result: AgentResult, what: str) -> Summary:
    """The summary of a run that did all it was asked, or the error that says why not
    (NoSpace when what it wrote to filled up)."""
    if result.code == 0 and result.summary is not None:
        return result.summary
    if result.fatal and any(f in result.fatal for f in _FULL):
        raise NoSpace(f"{what} failed: no space left on device")
    if result.fatal:
        raise EngineError(f"{what} failed: {result.fatal}")
    if result.errors:
        more = f" (and {len(result.errors) - 1} more)" if len(result.errors) > 1 else ""
        raise IntegrityError(f"{what} failed: {result.errors[0]}{more}")
    raise EngineError(f"{what} failed: the agent exited with {result.code}")


def _test_environment() -> dict[str, str] | None:
    """Crash tests' hold points inside the agent (voltool/agent/report.py, hold_for_tests),
    passed on only when set here, and only those named `agent-...`."""
    steps = [s for s in os.environ.get("VOLTOOL_TEST_HOLD_AT", "").split(",") if s]
    held = [s for s in steps if s.startswith("agent-")]
    return {"VOLTOOL_TEST_HOLD_AT": ",".join(held)} if held else None


def _log_peak_rss(summary: Summary, script: str, args: list[str]) -> None:
    """Benchmarks (scripts/bench.py): with VOLTOOL_BENCH_AGENT_RSS=<file>, each agent run
    appends a JSON line with its peak RSS, for the memory of every run an operation
    makes (a restore's plan, staging and pre-restore copy), not only the ones it reports."""
    log = os.environ.get("VOLTOOL_BENCH_AGENT_RSS")
    if not log:
        return
    first = script.splitlines()[1] if script.startswith("#!") else script
    line = {"program": first[:80], "args": args[:2], "peak_rss_kib": summary.peak_rss_kib}
    with open(log, "a") as f:
        f.write(json.dumps(line) + "\n")


def _path(packed: object) -> str:
    """A path as the agent spells it (text, or {"b64": ...}), for a message."""
    if isinstance(packed, dict):
        return quoted(f"(non-UTF-8 name, base64 {packed.get('b64', '?')})")
    return quoted(packed)
