"""The host's own Python, gathered as the files of a root filesystem.

Where no registry answers, the agent image is made from the Python that runs
voltool. What goes in:

- the interpreter, relocated to /usr/local (the official images' layout:
  bin/python3.X, lib/python3.X, lib/libpython3.X.so...): Python finds its
  prefix from where its binary is, so nothing needs PYTHONHOME (which `-I`
  would ignore anyway);
- its standard library, without tests, GUI, packaging and 2to3 tools, nor
  anything installed in site-packages; compiled files only for this
  interpreter's cache tag (no optimised variants);
- its extension modules (lib-dynload), without test, GUI and terminal ones;
- every shared library those need, as `ldd` resolves them on this host,
  the dynamic loader included, each at the path the host has it, with the
  symlinks met on the way (merged /usr: /lib -> usr/lib). Python's own
  library (libpython, for a shared build) goes to /usr/local/lib. The image's
  LD_LIBRARY_PATH (`library_path`) names their directories, so no ld.so.cache
  is needed.

`plan` says what to copy; `write_tar` writes it. Both are pure but for reading
the host's files; `ldd` is passed in, so tests can give its output.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from voltool.errors import AgentImageFailed

PREFIX = "usr/local"

# Skipped wherever they are in the standard library.
_SKIP_DIRS_ANYWHERE = frozenset({"test", "tests", "idle_test", "__phello__"})
# Skipped at its top: tools and GUI the agent never uses, and what pip installed.
_SKIP_TOP = frozenset(
    {
        "idlelib",
        "tkinter",
        "turtledemo",
        "ensurepip",
        "lib2to3",
        "distutils",
        "pydoc_data",
        "site-packages",
        "lib-dynload",  # copied on its own, filtered
    }
)
# Extension modules (by module name) left out: tests, GUI, terminal, NIS.
_SKIP_MODULES = re.compile(
    r"^(_test\w*|_ctypes_test|_xxtestfuzz|xxlimited\w*|_tkinter|_curses\w*|readline|nis"
    r"|ossaudiodev)$"
)
# Loaded by glibc when a thread exits through pthread_exit (Python's daemon
# threads at shutdown): never in ldd's output, fatal when missing.
_DLOPENED = ("libgcc_s.so.1",)


@dataclass(frozen=True)
class HostPython:
    executable: str  # the real binary (a virtualenv's python is a link to it)
    prefix: str  # its installation prefix (sys.base_prefix)
    version: str  # "3.11.7"
    build: str  # sys.version: names the build, not only the release
    xy: str  # "3.11"
    stdlib: str  # its standard library directory
    dynload: str  # its extension modules
    cache_tag: str  # "cpython-311"


@dataclass(frozen=True)
class Entry:
    """One file of the root filesystem: `path` is relative to its root."""

    path: str
    kind: str  # "file" | "dir" | "symlink"
    source: str = ""  # file: the host file copied
    target: str = ""  # symlink: where it points
    mode: int = 0o755  # dir, or file given as `data`
    data: bytes | None = None  # file: its content, when it is not a host file


@dataclass(frozen=True)
class Plan:
    entries: list[Entry]
    library_path: str  # LD_LIBRARY_PATH for the image


def host_python() -> HostPython:
    """The Python running voltool; raises AgentImageFailed if it cannot be copied."""
    executable = os.path.realpath(sys.executable)
    stdlib = os.path.dirname(os.__file__)
    dynload = os.path.join(stdlib, "lib-dynload")
    cache_tag = sys.implementation.cache_tag
    if not os.path.isfile(executable) or not os.path.isdir(dynload) or not cache_tag:
        raise AgentImageFailed(
            f"the Python running voltool ({executable}) has no standard layout "
            f"(no {dynload}): cannot build the agent image from it"
        )
    return HostPython(
        executable=executable,
        prefix=os.path.realpath(sys.base_prefix),
        version=".".join(map(str, sys.version_info[:3])),
        build=sys.version,
        xy=f"{sys.version_info[0]}.{sys.version_info[1]}",
        stdlib=os.path.realpath(stdlib),
        dynload=os.path.realpath(dynload),
        cache_tag=cache_tag,
    )


def site_packages(py: HostPython) -> list[str]:
    """The image's site-packages directories, relative to the root: where its `site`
    looks for .pth files (Debian's Python looks in dist-packages)."""
    import site

    found = [
        d.lstrip("/") for d in site.getsitepackages([f"/{PREFIX}"]) if d.startswith(f"/{PREFIX}/")
    ]
    return found or [f"{PREFIX}/lib/python{py.xy}/site-packages"]


def run_ldd(paths: list[str]) -> str:
    """`ldd`'s output for `paths` (a header line `path:` before each one's libraries)."""
    try:
        done = subprocess.run(
            ["ldd", *paths], capture_output=True, text=True, timeout=120, check=False
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise AgentImageFailed(f"cannot run ldd to find Python's shared libraries: {e}") from None
    return done.stdout


@dataclass(frozen=True)
class Libraries:
    found: list[str]  # absolute paths, the loader included, in order of first mention
    missing: list[str]  # "library (needed by file)"


def parse_ldd(text: str) -> Libraries:
    """The libraries `ldd` names. Lines read `name => /path (0x...)`, `/loader (0x...)`,
    `name (0x...)` (the vDSO: no file), `name => not found`; with several files,
    `file:` before each one's lines."""
    found: list[str] = []
    missing: list[str] = []
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if not raw[:1].isspace() and line.endswith(":"):
            current = line[:-1]
            continue
        if "=>" in line:
            name, _, rest = (part.strip() for part in line.partition("=>"))
            if rest.startswith("not found"):
                missing.append(f"{name} (needed by {current})" if current else name)
                continue
            path = rest.split(" (", 1)[0].strip()
        else:
            path = line.split(" (", 1)[0].strip()
        if path.startswith("/") and path not in found:
            found.append(path)
    return Libraries(found, missing)


def _skipped_dir(parent_rel: str, name: str) -> bool:
    if name in _SKIP_DIRS_ANYWHERE:
        return True
    top = parent_rel == ""
    return top and (name in _SKIP_TOP or name.startswith("config-"))


def stdlib_entries(py: HostPython) -> list[Entry]:
    """The standard library's files, filtered, under PREFIX/lib/python3.X."""
    dest = f"{PREFIX}/lib/python{py.xy}"
    pyc = f".{py.cache_tag}.pyc"
    entries: list[Entry] = []
    for root, dirs, files in os.walk(py.stdlib):
        rel = os.path.relpath(root, py.stdlib)
        rel = "" if rel == "." else rel
        dirs[:] = sorted(d for d in dirs if not _skipped_dir(rel, d))
        in_cache = os.path.basename(root) == "__pycache__"
        for name in sorted(files):
            if in_cache and not name.endswith(pyc):
                continue  # another interpreter's, or an optimised (-O) variant
            if name.endswith((".exe", ".pyc")) and not in_cache:
                continue
            source = os.path.join(root, name)
            path = f"{dest}/{rel}/{name}" if rel else f"{dest}/{name}"
            if os.path.islink(source):
                entries.append(Entry(path, "symlink", target=os.readlink(source)))
            else:
                entries.append(Entry(path, "file", source=source))
    return entries


def dynload_modules(py: HostPython) -> list[str]:
    """The extension modules copied: host paths."""
    kept = []
    for name in sorted(os.listdir(py.dynload)):
        module = name.split(".", 1)[0]
        if name.endswith(".so") and not _SKIP_MODULES.match(module):
            kept.append(os.path.join(py.dynload, name))
    return kept


def chain(path: str, limit: int = 40) -> list[Entry]:
    """Entries that make absolute `path` resolve in the image as it does on the host:
    each symlink met on the way (in any component), then the file it ends at."""
    entries: list[Entry] = []
    for _ in range(limit):
        parts = path.strip("/").split("/")
        current = ""
        for i, part in enumerate(parts):
            current = f"{current}/{part}"
            if os.path.islink(current):
                target = os.readlink(current)
                entries.append(Entry(current.lstrip("/"), "symlink", target=target))
                rest = "/".join(parts[i + 1 :])
                base = os.path.join(os.path.dirname(current), target)
                path = os.path.normpath(f"{base}/{rest}" if rest else base)
                break
        else:
            entries.append(Entry(path.lstrip("/"), "file", source=path))
            return entries
    raise AgentImageFailed(f"too many symbolic links resolving {path}")


def plan(
    py: HostPython, ldd: Callable[[list[str]], str] = run_ldd, binaries: Iterable[str] = ()
) -> Plan:
    """Every file of the root filesystem that holds `py`, and the shared libraries of the
    other host `binaries` (which the caller copies); raises AgentImageFailed if a shared
    library that one of them needs cannot be found."""
    lib = f"{PREFIX}/lib"
    bindir = f"{PREFIX}/bin"
    binary = f"python{py.xy}"
    entries = [
        Entry(f"{bindir}/{binary}", "file", source=py.executable),
        Entry(f"{bindir}/python3", "symlink", target=binary),
        Entry(f"{bindir}/python", "symlink", target="python3"),
    ]
    entries += stdlib_entries(py)
    entries += [Entry(d, "dir") for d in site_packages(py)]
    modules = dynload_modules(py)
    for m in modules:
        entries.append(Entry(f"{lib}/python{py.xy}/lib-dynload/{os.path.basename(m)}", "file", m))
    libs = parse_ldd(ldd([py.executable, *modules, *binaries]))
    if libs.missing:
        raise AgentImageFailed(
            "cannot build the agent image: this host's Python needs shared libraries "
            f"that are missing: {', '.join(libs.missing)}"
        )
    if not any("ld-linux" in os.path.basename(p) or "/ld-" in p for p in libs.found):
        raise AgentImageFailed("cannot build the agent image: ldd named no dynamic loader")
    found = list(libs.found)
    libc = next((p for p in found if os.path.basename(p).startswith("libc.so")), None)
    if libc:
        for name in _DLOPENED:
            candidate = os.path.join(os.path.dirname(libc), name)
            if os.path.exists(candidate) and candidate not in found:
                found.append(candidate)
    dirs = [f"/{lib}"]
    for path in found:
        if os.path.basename(path).startswith("libpython"):
            # Python's own: relocated with the binary (whose RUNPATH, if any, names the host's
            # prefix: LD_LIBRARY_PATH finds it instead). Any other library stays where it is.
            entries.append(Entry(f"{lib}/{os.path.basename(path)}", "file", os.path.realpath(path)))
            continue
        entries += chain(path)
        if os.path.dirname(path) not in dirs:
            dirs.append(os.path.dirname(path))
    return Plan(entries, ":".join(dirs))


def write_tar(entries: Iterable[Entry], out: BinaryIO) -> None:
    """Write `entries` as a tar to `out`, parents first, owned by root, each path once.

    Files keep their host mode and mtime (compiled files are checked against
    their source's mtime); a path met twice must mean the same thing both times.
    """
    seen: dict[str, Entry] = {}
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for entry in entries:
            for parent in _parents(entry.path):
                if parent not in seen:
                    seen[parent] = Entry(parent, "dir")
                    tar.addfile(_info(seen[parent]))
            if entry.path in seen:
                if seen[entry.path] != entry and entry.kind != "dir":
                    raise AgentImageFailed(f"the agent image would hold /{entry.path} twice")
                continue
            seen[entry.path] = entry
            info = _info(entry)
            if entry.kind == "file" and entry.data is not None:
                info.size, info.mode = len(entry.data), entry.mode
                tar.addfile(info, io.BytesIO(entry.data))
            elif entry.kind == "file":
                with open(entry.source, "rb") as f:
                    st = os.fstat(f.fileno())
                    info.size, info.mode, info.mtime = st.st_size, st.st_mode & 0o7777, st.st_mtime
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def _parents(path: str) -> list[str]:
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def _info(entry: Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.path)
    info.uid = info.gid = 0
    if entry.kind == "dir":
        info.type, info.mode = tarfile.DIRTYPE, entry.mode
    elif entry.kind == "symlink":
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry.target, 0o777
    return info
