"""The agent image: Python 3 and voltool's agent, for helpers that run the agent.

The contract, whichever way the image was made:

- Name: `voltool/helper:agent-<hash>`, where <hash> (12 hex digits) covers
  the agent's files (sorted names and contents), the interpreter (the host
  Python's `sys.version` and path, or the base image's reference), the static
  busybox's SHA-256 and the recipe's version (`RECIPE`). A new agent makes a
  new tag; an unchanged one finds its image and reuses it. A tag is only
  ever given to an image that passed its check (`check`), so an image with
  that tag is usable.
- The agent: every file under voltool/agent/ is copied as the package
  `voltool_agent` into /opt/voltool/voltool_agent; a `voltool-agent.pth` in
  site-packages puts /opt/voltool on sys.path, which `-I` keeps.
- Run it as root, with no network, like any helper (voltool.engine.client runs
  `/bin/sh -c SCRIPT`): `python3 -I -m voltool_agent ARGS`. PATH holds
  /usr/local/bin (python3) and /bin. /tmp is writable (1777).
- Labels: io.voltool.image=agent, and io.voltool.helper.origin saying how it
  was made: the base image's reference (`python:3.12-slim`), or
  `offline-host-python 3.11.7`.
- restic (for copies off the machine, voltool.engine.restic): the host's
  restic binary, where the host has one (Debian's `restic`), goes in as
  /usr/local/bin/restic with the libraries it needs and the host's CA
  certificates; io.voltool.restic says its version, and its SHA-256 is part
  of <hash>. An image made on a host without restic runs the agent, not
  restic: the remote commands say how to get it.

Two ways to make it, tried in this order:

1. Derived from an official Python image, pulled once (with a short timeout),
   through the engine's build API: the agent is copied in, nothing else.
   This machine has no registry: this path is only exercised where one
   answers, so it is kept small.
2. Offline, with `docker import` of a root filesystem made from the host's
   own Python (see voltool.engine.hostpython) plus the static busybox and its
   applets (/bin/sh).

Either way, the image is checked in a started helper before it is named:
OpenSSL's SHA-256 (without libcrypto hashlib falls back to one ~8x slower),
os.copy_file_range, os.listxattr, AF_UNIX sockets, json's C scanner, and the
agent's own `selftest`. An image that fails is removed, and the build fails
with one line (AgentImageFailed, exit 2).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from voltool.engine import helper_image, hostpython
from voltool.engine import labels as L
from voltool.engine.client import Engine
from voltool.engine.hostpython import Entry
from voltool.errors import AgentImageFailed, EngineError, NotFound, VoltoolError
from voltool.ids import new_id
from voltool.owner import current
from voltool.report import Reporter
from voltool.runtime import Runtime
from voltool.sh import program

RECIPE = "2"  # bump when what goes into the image, or how, changes
AGENT_MODULE = "voltool_agent"
AGENT_PARENT = "/opt/voltool"  # on sys.path in the image
AGENT_COMMAND = ("python3", "-I", "-m", AGENT_MODULE)
DEFAULT_BASE = "python:3.12-slim"
PULL_TIMEOUT = 15.0  # seconds any one read of the pull may take
BUILD_TIMEOUT = 300.0
OFFLINE_ORIGIN = "offline-host-python"
_CHECKED = "agent-images"  # in the state directory: ids of images that passed, one a line

_SOURCE = Path(__file__).parent.parent / "agent"
RESTIC_IN_IMAGE = "/usr/local/bin/restic"
# The host's CA bundle (Debian's ca-certificates), for restic's TLS to a remote repository.
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"


@dataclass(frozen=True)
class HostRestic:
    """The restic binary on this host, put into the agent image."""

    path: str  # the real file
    version: str  # "0.14.0"
    digest: str  # SHA-256 of the binary


def host_restic() -> HostRestic | None:
    """This host's restic (on PATH), or None if it has none that runs."""
    found = shutil.which("restic")
    if not found:
        return None
    path = os.path.realpath(found)
    try:
        said = subprocess.run(
            [path, "version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.split()
        with open(path, "rb") as f:  # streamed: the binary is some 20 MB
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, subprocess.SubprocessError):
        return None
    if len(said) < 2 or said[0] != "restic":
        return None
    return HostRestic(path, said[1][:32], digest)


@dataclass(frozen=True)
class AgentStatus:
    image: str | None  # the agent image, when it is there and runs the agent
    origin: str  # how it was made ("" when it is not there)
    how: str  # words for `voltool helper` and `doctor`
    problem: str | None = None  # why the image that is there cannot run the agent
    offline: bool = True  # whether it can be built offline from this host


def agent_files(source: Path = _SOURCE) -> dict[str, bytes]:
    """The agent package's files, by name relative to it (compiled files left out)."""
    files: dict[str, bytes] = {}
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if "__pycache__" in rel.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        files[rel.as_posix()] = path.read_bytes()
    if "__main__.py" not in files:
        raise AgentImageFailed(f"the agent package {source} has no __main__.py")
    return files


def agent_tag(
    files: dict[str, bytes], interpreter: str, busybox_digest: str, restic: str = ""
) -> str:
    """The agent image's tag: a hash of everything that goes into it (`restic`: the
    SHA-256 of the restic binary it carries, "" for none)."""
    h = hashlib.sha256()
    for part in (f"recipe {RECIPE}", interpreter, busybox_digest, f"restic {restic}"):
        h.update(part.encode() + b"\0")
    for name in sorted(files):
        h.update(name.encode() + b"\0" + len(files[name]).to_bytes(8, "big") + files[name])
    return f"{helper_image.BUILT_REPOSITORY}:agent-{h.hexdigest()[:12]}"


def derived_tag(
    files: dict[str, bytes], base: str = DEFAULT_BASE, restic: HostRestic | None = None
) -> str:
    return agent_tag(files, f"derived from {base}", "", restic.digest if restic else "")


def offline_tag(
    files: dict[str, bytes],
    py: hostpython.HostPython,
    busybox: str,
    restic: HostRestic | None = None,
) -> str:
    interpreter = f"{OFFLINE_ORIGIN} {py.build} {py.executable}"
    digest = restic.digest if restic else ""
    return agent_tag(files, interpreter, helper_image.busybox_digest(busybox), digest)


def agent_image(rt: Runtime) -> str:
    """The image to run the agent in, built on first use (with a status line)."""
    return ensure(rt.engine, rt.config.busybox, rt.reporter)


def status(engine: Engine, busybox: str) -> AgentStatus:
    """Whether the agent image is there and runs the agent; builds nothing.

    An image that is there is checked once per image id (remembered in the
    state directory), as helper images are."""
    files = agent_files()
    restic = host_restic()
    tags = [derived_tag(files, restic=restic)]
    offline = f"{OFFLINE_ORIGIN} (from this host's Python and {busybox})"
    can_build = True
    try:
        py = hostpython.host_python()
        offline = f"{OFFLINE_ORIGIN} {py.version}"
        tags.append(offline_tag(files, py, busybox, restic))
    except VoltoolError as e:
        offline = f"not offline: {e}"
        can_build = False
    for tag in tags:
        if not engine.image_exists(tag):
            continue
        info = engine.image(tag)
        origin = info.labels.get(L.IMAGE_ORIGIN, "?")
        size = f"{info.size / 1e6:.0f} MB"
        reason = None if info.id in helper_image.passed(_CHECKED) else check(engine, tag)
        if reason:
            return AgentStatus(
                None, origin, f"{tag} ({origin}, {size}) cannot run the agent: {reason}", reason
            )
        helper_image.remember(info.id, _CHECKED)
        carried = info.labels.get(L.IMAGE_RESTIC)
        with_restic = f"restic {carried}" if carried else "no restic: the host has none"
        return AgentStatus(tag, origin, f"{tag} ({origin}, {size}; runs the agent; {with_restic})")
    return AgentStatus(
        None,
        "",
        f"not built: would be derived from {DEFAULT_BASE}, else built {offline}",
        offline=can_build,
    )


def ensure(engine: Engine, busybox: str, reporter: Reporter, base: str = DEFAULT_BASE) -> str:
    """Return the agent image, building it if it is not there: derived from `base` if
    a registry answers, else offline from the host's Python. Raises AgentImageFailed
    (or NotFound for a missing busybox) if it cannot be made."""
    files = agent_files()
    restic = host_restic()
    derived = derived_tag(files, base, restic)
    if engine.image_exists(derived):
        return derived
    offline: str | VoltoolError
    try:
        py = hostpython.host_python()
        tag = offline_tag(files, py, busybox, restic)
        if engine.image_exists(tag):
            return tag
        offline = tag
    except (AgentImageFailed, NotFound) as e:
        offline = e  # not offline, then; a registry may still answer
    reporter.status("building the agent image")
    try:
        if _derive(engine, base, files, derived, reporter, restic):
            return derived
        if isinstance(offline, VoltoolError):
            raise offline
        reporter.note(f"building the agent image from this host's Python {py.version} (offline)")
        _build_offline(engine, py, busybox, files, offline, restic)
        return offline
    finally:
        reporter.status(None)


def _derive(
    engine: Engine,
    base: str,
    files: dict[str, bytes],
    tag: str,
    reporter: Reporter,
    restic: HostRestic | None,
) -> bool:
    """Build the agent image from `base`; False if `base` cannot be pulled or built."""
    if not engine.image_exists(base):
        reporter.note(f"pulling {base} for the agent image (once)")
        try:
            engine.pull(base, lambda s: None, timeout=PULL_TIMEOUT)
        except VoltoolError as e:
            reporter.note(f"cannot pull {base}: {e}")
            return False
    dockerfile = (
        f"FROM {base}\n"
        f"COPY {AGENT_MODULE} {AGENT_PARENT}/{AGENT_MODULE}\n"
        + (f"COPY restic {RESTIC_IN_IMAGE}\n" if restic else "")
        + 'RUN python3 -c "import site; '
        f"open(site.getsitepackages()[0] + '/voltool-agent.pth', 'w').write('{AGENT_PARENT}')\"\n"
    ).encode()
    members = [("Dockerfile", dockerfile, 0o644)]
    members += [(f"{AGENT_MODULE}/{n}", d, 0o644) for n, d in sorted(files.items())]
    if restic:
        members.append(("restic", Path(restic.path).read_bytes(), 0o755))
    context = io.BytesIO()
    with tarfile.open(fileobj=context, mode="w") as tar:
        for name, data, mode in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
    context.seek(0)
    labels = {L.IMAGE: L.IMAGE_AGENT, L.IMAGE_ORIGIN: base}
    if restic:
        labels[L.IMAGE_RESTIC] = restic.version
    try:
        _checked_as(
            engine, tag, lambda temp: engine.build_image(context, temp, labels, BUILD_TIMEOUT)
        )
    except VoltoolError as e:
        reporter.warn(f"cannot build the agent image from {base}: {e}")
        return False
    return True


def _build_offline(
    engine: Engine,
    py: hostpython.HostPython,
    busybox: str,
    files: dict[str, bytes],
    tag: str,
    restic: HostRestic | None,
) -> None:
    """Import a root filesystem of the host's Python, busybox, the agent and restic (if
    given) as `tag`."""
    plan = hostpython.plan(py, binaries=[restic.path] if restic else [])
    carried: list[Entry] = []
    if restic:
        carried.append(Entry(RESTIC_IN_IMAGE.lstrip("/"), "file", source=restic.path))
        if os.path.isfile(CA_BUNDLE):
            carried.append(Entry(CA_BUNDLE.lstrip("/"), "file", source=os.path.realpath(CA_BUNDLE)))
    entries = [
        Entry("tmp", "dir", mode=0o1777),
        Entry("bin/busybox", "file", source=busybox),
        *(
            Entry(f"bin/{a}", "symlink", target="busybox")
            for a in helper_image.busybox_applets(busybox)
        ),
        *plan.entries,
        *(
            Entry(f"{d}/voltool-agent.pth", "file", data=f"{AGENT_PARENT}\n".encode(), mode=0o644)
            for d in hostpython.site_packages(py)
        ),
        *(
            Entry(f"{AGENT_PARENT.lstrip('/')}/{AGENT_MODULE}/{n}", "file", data=d, mode=0o644)
            for n, d in sorted(files.items())
        ),
        *carried,
    ]
    changes = [
        "ENV PATH=/usr/local/bin:/bin",
        f"ENV LD_LIBRARY_PATH={plan.library_path}",
        f"LABEL {L.IMAGE}={L.IMAGE_AGENT}",
        f'LABEL {L.IMAGE_ORIGIN}="{OFFLINE_ORIGIN} {py.version}"',
        *([f"LABEL {L.IMAGE_RESTIC}={restic.version}"] if restic else []),
        f"CMD {json.dumps([*AGENT_COMMAND, '--version'])}",
    ]
    with tempfile.TemporaryFile(prefix="voltool-agent-image-") as f:
        hostpython.write_tar(entries, f)
        f.seek(0)
        _checked_as(engine, tag, lambda temp: engine.import_image(f, temp, changes))


def _checked_as(engine: Engine, tag: str, make: Callable[[str], str]) -> None:
    """Make the image under a temporary tag, check it, then name it `tag`; a made image
    that fails, or is interrupted, is removed."""
    temp = f"{tag}-unchecked-{new_id()[:8]}"
    try:
        image_id = make(temp)
        reason = check(engine, temp)
        if reason:
            raise AgentImageFailed(
                f"the agent image built ({tag}) cannot run the agent: {reason}; it was removed"
            )
        engine.tag_image(temp, tag)
        helper_image.remember(image_id, _CHECKED)
    finally:
        with contextlib.suppress(VoltoolError):
            engine.remove_image(temp)  # only the name once it passed: `tag` keeps the image
    _remove_older(engine, tag)


def _remove_older(engine: Engine, tag: str) -> None:
    """Remove the agent images other than `tag` (of an older agent, interpreter or recipe)
    that no container uses: every new agent makes a new image, and nothing else would
    ever remove the old ones. Best effort: one kept costs disk, not correctness."""
    prefix = f"{helper_image.BUILT_REPOSITORY}:agent-"
    with contextlib.suppress(VoltoolError):
        for old in engine.image_tags(helper_image.BUILT_REPOSITORY):
            if old.startswith(prefix) and old != tag and "-unchecked-" not in old:
                engine.remove_unused_image(old)


# Run in the image with `python3 -I -c`: one JSON line, the problems found.
_CHECK_PY = r"""
import errno, hashlib, json, os, socket, sys
import json.scanner
problems = []
t = type(hashlib.sha256())
if t.__module__ != "_hashlib":
    problems.append(
        "hashlib's SHA-256 is %s.%s, not OpenSSL's (no libcrypto?)" % (t.__module__, t.__name__)
    )
try:
    a = os.open("/tmp/.voltool-check-a", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    b = os.open("/tmp/.voltool-check-b", os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(a, b"x" * 4096)
    if os.copy_file_range(a, b, 4096, 0, 0) != 4096 or os.pread(b, 4096, 0) != b"x" * 4096:
        problems.append("os.copy_file_range copied the wrong bytes")
    try:
        os.listxattr("/tmp/.voltool-check-a")
    except OSError as e:
        if e.errno not in (errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
except (AttributeError, OSError) as e:
    problems.append("files: %s" % e)
try:
    s1, s2 = socket.socketpair(socket.AF_UNIX)
    s1.sendall(b"ping")
    if s2.recv(4) != b"ping":
        problems.append("an AF_UNIX socket pair lost data")
except (AttributeError, OSError) as e:
    problems.append("AF_UNIX sockets: %s" % e)
if json.loads(json.dumps({"a": [1]})) != {"a": [1]} or json.scanner.c_make_scanner is None:
    problems.append("json has no C scanner")
if not os.__file__.startswith(sys.prefix + "/"):
    problems.append("sys.prefix %s does not hold os.py (%s)" % (sys.prefix, os.__file__))
print(json.dumps({"problems": problems, "python": sys.version.split()[0], "prefix": sys.prefix}))
"""


def check(engine: Engine, image: str) -> str | None:
    """Why `image` cannot run the agent, or None: one started helper, no network.

    Engine errors that say nothing about the image are raised, not taken for a verdict."""
    labels = L.managed(L.ROLE_HELPER, new_id(), current().token())
    try:
        result = engine.run(image, [], labels, program("agent-check"), [_CHECK_PY])
    except EngineError as e:
        text = str(e)
        if "/bin/sh" in text or "executable file not found" in text:
            return "it has no /bin/sh"
        raise
    lines = result.stdout.decode(errors="replace").splitlines()
    if result.exit_code != 0 or len(lines) < 2:
        said = result.stderr.decode(errors="replace").strip().splitlines()
        return (said[-1] if said else f"its check exited {result.exit_code}")[:300]
    try:
        report, selftest = json.loads(lines[0]), json.loads(lines[-1])
        problems = [str(p) for p in report["problems"]]
        if selftest.get("openssl") is not True:
            problems.append(f"the agent's selftest says sha256 is {selftest.get('sha256')}")
    except (ValueError, KeyError, TypeError, AttributeError):
        return "its check printed something else than its report"
    return "; ".join(problems) or None
