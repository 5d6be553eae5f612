"""The agent image without an engine: its tag, ldd's output, the root filesystem's files."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from voltool.engine import agent_image, hostpython
from voltool.engine.client import RunResult
from voltool.engine.hostpython import Entry, HostPython
from voltool.errors import AgentImageFailed, ExitCode

FILES = {"__init__.py": b"", "__main__.py": b"print('agent')\n"}


def test_the_tag_changes_with_every_input_and_only_with_them() -> None:
    tag = agent_image.agent_tag(FILES, "3.11.7", "bb")
    assert tag.startswith("voltool/helper:agent-") and len(tag.split("-")[-1]) == 12
    assert agent_image.agent_tag(dict(reversed(FILES.items())), "3.11.7", "bb") == tag
    assert agent_image.agent_tag({**FILES, "__main__.py": b"print('v2')\n"}, "3.11.7", "bb") != tag
    assert agent_image.agent_tag({**FILES, "walk.py": b""}, "3.11.7", "bb") != tag
    renamed = {"__init__.py": b"", "main.py": FILES["__main__.py"]}
    assert agent_image.agent_tag(renamed, "3.11.7", "bb") != tag
    assert agent_image.agent_tag(FILES, "3.12.1", "bb") != tag
    assert agent_image.agent_tag(FILES, "3.11.7", "cc") != tag


def test_agent_files_are_the_package_without_compiled_files(tmp_path: Path) -> None:
    pkg = tmp_path / "agent"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "sub").mkdir()
    (pkg / "__main__.py").write_bytes(b"main")
    (pkg / "sub" / "walk.py").write_bytes(b"walk")
    (pkg / "__pycache__" / "__main__.cpython-311.pyc").write_bytes(b"x")
    assert agent_image.agent_files(pkg) == {"__main__.py": b"main", "sub/walk.py": b"walk"}
    (pkg / "__main__.py").unlink()
    with pytest.raises(AgentImageFailed):
        agent_image.agent_files(pkg)


def test_the_real_agent_package_is_found() -> None:
    files = agent_image.agent_files()
    assert "__main__.py" in files and "__init__.py" in files


LDD = """\
/py/bin/python3.11:
\tlinux-vdso.so.1 (0x00007ffd5b1e5000)
\tlibpython3.11.so.1.0 => /py/lib/libpython3.11.so.1.0 (0x00007f0000000000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0000100000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0000200000)
/py/lib/python3.11/lib-dynload/_hashlib.cpython-311-x86_64-linux-gnu.so:
\tlinux-vdso.so.1 (0x00007ffd5b1e5000)
\tlibcrypto.so.3 => /lib/x86_64-linux-gnu/libcrypto.so.3 (0x00007f0000300000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0000100000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0000200000)
/py/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so:
\tlibffi.so.8 => not found
\tlinux-gate.so.1 =>  (0x00007ffd5b1e5000)
"""


def test_ldd_output_gives_the_libraries_the_loader_and_what_is_missing() -> None:
    libs = hostpython.parse_ldd(LDD)
    assert libs.found == [
        "/py/lib/libpython3.11.so.1.0",
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/lib64/ld-linux-x86-64.so.2",
        "/lib/x86_64-linux-gnu/libcrypto.so.3",
    ]
    ctypes = "/py/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so"
    assert libs.missing == [f"libffi.so.8 (needed by {ctypes})"]


def test_ldd_output_for_one_file_has_no_header() -> None:
    libs = hostpython.parse_ldd("\tlibc.so.6 => /lib/libc.so.6 (0x1)\n\t/lib/ld.so (0x2)\n")
    assert libs.found == ["/lib/libc.so.6", "/lib/ld.so"] and libs.missing == []


def fake_host(tmp_path: Path) -> tuple[HostPython, dict[str, str]]:
    """A Python installation and system libraries under tmp_path, with merged /usr."""
    prefix = tmp_path / "py"
    stdlib = prefix / "lib" / "python3.11"
    dynload = stdlib / "lib-dynload"
    for d in (
        "bin",
        "lib/python3.11/lib-dynload",
        "lib/python3.11/__pycache__",
        "lib/python3.11/test",
        "lib/python3.11/json/__pycache__",
        "lib/python3.11/unittest/test",
        "lib/python3.11/idlelib",
        "lib/python3.11/site-packages/requests",
        "lib/python3.11/config-3.11-x86_64-linux-gnu",
    ):
        (prefix / d).mkdir(parents=True, exist_ok=True)
    for f in (
        "bin/python3.11",
        "lib/libpython3.11.so.1.0",
        "lib/python3.11/os.py",
        "lib/python3.11/__pycache__/os.cpython-311.pyc",
        "lib/python3.11/__pycache__/os.cpython-311.opt-1.pyc",
        "lib/python3.11/__pycache__/os.cpython-310.pyc",
        "lib/python3.11/test/test_os.py",
        "lib/python3.11/json/__init__.py",
        "lib/python3.11/json/__pycache__/__init__.cpython-311.pyc",
        "lib/python3.11/unittest/case.py",
        "lib/python3.11/unittest/test/test_case.py",
        "lib/python3.11/idlelib/idle.py",
        "lib/python3.11/site-packages/requests/api.py",
        "lib/python3.11/config-3.11-x86_64-linux-gnu/libpython3.11.a",
        "lib/python3.11/lib-dynload/_hashlib.cpython-311-x86_64-linux-gnu.so",
        "lib/python3.11/lib-dynload/_testcapi.cpython-311-x86_64-linux-gnu.so",
        "lib/python3.11/lib-dynload/_tkinter.cpython-311-x86_64-linux-gnu.so",
    ):
        (prefix / f).write_bytes(f.encode())
    system = tmp_path / "usr" / "lib"
    (system / "x86_64-linux-gnu").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("usr/lib")
    for name in ("libc.so.6", "ld-linux-x86-64.so.2", "libcrypto.so.3", "libgcc_s.so.1"):
        (system / "x86_64-linux-gnu" / name).write_bytes(name.encode())
    (system / "x86_64-linux-gnu" / "libz.so.1.2.13").write_bytes(b"z")
    (system / "x86_64-linux-gnu" / "libz.so.1").symlink_to("libz.so.1.2.13")
    (tmp_path / "lib64").mkdir()
    (tmp_path / "lib64" / "ld-linux-x86-64.so.2").symlink_to(
        f"{tmp_path}/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    )
    py = HostPython(
        executable=str(prefix / "bin" / "python3.11"),
        prefix=str(prefix),
        version="3.11.7",
        build="3.11.7 (main)",
        xy="3.11",
        stdlib=str(stdlib),
        dynload=str(dynload),
        cache_tag="cpython-311",
    )
    sys_lib = f"{tmp_path}/lib/x86_64-linux-gnu"
    needs = {
        py.executable: [f"{prefix}/lib/libpython3.11.so.1.0", f"{sys_lib}/libc.so.6"],
        "_hashlib": [f"{sys_lib}/libcrypto.so.3", f"{sys_lib}/libz.so.1"],
    }
    outputs = {}
    for path in [py.executable, *hostpython.dynload_modules(py)]:
        libs = needs.get(path, []) + needs.get(os.path.basename(path).split(".")[0], [])
        lines = [f"\t{os.path.basename(lib)} => {lib} (0x1)" for lib in libs]
        outputs[path] = "\n".join(
            [f"{path}:", *lines, f"\t{tmp_path}/lib64/ld-linux-x86-64.so.2 (0x2)"]
        )
    return py, outputs


def test_the_root_filesystem_holds_python_its_libraries_and_the_loader(tmp_path: Path) -> None:
    py, outputs = fake_host(tmp_path)
    asked: list[list[str]] = []

    def ldd(paths: list[str]) -> str:
        asked.append(paths)
        return "\n".join(outputs[p] for p in paths)

    plan = hostpython.plan(py, ldd)
    by_path = {e.path: e for e in plan.entries}
    root = str(tmp_path).lstrip("/")
    # The interpreter, relocated, and its own library beside the others.
    assert by_path["usr/local/bin/python3.11"].source == py.executable
    assert by_path["usr/local/bin/python3"].target == "python3.11"
    assert by_path["usr/local/lib/libpython3.11.so.1.0"].kind == "file"
    # The extension modules, without the test and GUI ones; ldd was asked about those kept.
    dyn = "usr/local/lib/python3.11/lib-dynload/"
    assert f"{dyn}_hashlib.cpython-311-x86_64-linux-gnu.so" in by_path
    assert not any(
        p.startswith(f"{dyn}_testcapi") or p.startswith(f"{dyn}_tkinter") for p in by_path
    )
    assert len(asked) == 1 and not any("_testcapi" in p for p in asked[0])
    # libcrypto because _hashlib needs it, at its real path behind the /lib symlink.
    assert by_path[f"{root}/lib"] == Entry(f"{root}/lib", "symlink", target="usr/lib")
    crypto = f"{root}/usr/lib/x86_64-linux-gnu/libcrypto.so.3"
    assert by_path[crypto].source == f"/{crypto}"
    # A versioned library: its link and the file.
    assert by_path[f"{root}/usr/lib/x86_64-linux-gnu/libz.so.1"].target == "libz.so.1.2.13"
    assert f"{root}/usr/lib/x86_64-linux-gnu/libz.so.1.2.13" in by_path
    # The loader, at the path the interpreter names, through both of its symlinks.
    assert by_path[f"{root}/lib64/ld-linux-x86-64.so.2"].kind == "symlink"
    assert by_path[f"{root}/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"].kind == "file"
    # Only libpython moves: a Python installed in /usr (Debian's) shares its prefix with libc.
    assert not any(p.startswith("usr/local/lib/l") and "libpython" not in p for p in by_path)
    # What pthread_exit loads, though ldd never names it.
    assert f"{root}/usr/lib/x86_64-linux-gnu/libgcc_s.so.1" in by_path
    # The standard library, without tests, tools, what pip installed, the static library.
    lib = "usr/local/lib/python3.11"
    assert f"{lib}/os.py" in by_path and f"{lib}/json/__init__.py" in by_path
    assert f"{lib}/unittest/case.py" in by_path
    assert f"{lib}/__pycache__/os.cpython-311.pyc" in by_path
    assert f"{lib}/json/__pycache__/__init__.cpython-311.pyc" in by_path
    for path in by_path:
        assert "/test/" not in path and "idlelib" not in path and "config-3.11" not in path
        assert "opt-1" not in path and "cpython-310" not in path and "requests" not in path
    assert by_path[f"{lib}/site-packages"].kind == "dir"
    assert plan.library_path.split(":")[0] == "/usr/local/lib"
    assert f"{tmp_path}/lib/x86_64-linux-gnu" in plan.library_path.split(":")


def test_a_missing_library_fails_the_build_naming_it(tmp_path: Path) -> None:
    py, _ = fake_host(tmp_path)
    with pytest.raises(AgentImageFailed, match=r"libcrypto.so.3 \(needed by .*_hashlib") as e:
        hostpython.plan(py, lambda paths: "x/_hashlib.so:\n\tlibcrypto.so.3 => not found\n")
    assert e.value.exit_code == ExitCode.USAGE


def test_the_tar_has_parents_first_root_owners_and_each_path_once(tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"data")
    os.chmod(src, 0o640)
    entries = [
        Entry("tmp", "dir", mode=0o1777),
        Entry("usr/local/bin/python3", "file", source=str(src)),
        Entry("lib", "symlink", target="usr/lib"),
        Entry("lib", "symlink", target="usr/lib"),
        Entry("opt/voltool/voltool_agent/__main__.py", "file", data=b"main", mode=0o644),
    ]
    buf = io.BytesIO()
    hostpython.write_tar(entries, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        members = tar.getmembers()
        names = [m.name for m in members]
        assert names == [
            "tmp",
            "usr",
            "usr/local",
            "usr/local/bin",
            "usr/local/bin/python3",
            "lib",
            "opt",
            "opt/voltool",
            "opt/voltool/voltool_agent",
            "opt/voltool/voltool_agent/__main__.py",
        ]
        info = {m.name: m for m in members}
        assert info["tmp"].mode == 0o1777 and info["usr/local/bin/python3"].mode == 0o640
        assert all(m.uid == 0 and m.gid == 0 for m in members)
        f = tar.extractfile("opt/voltool/voltool_agent/__main__.py")
        assert f is not None and f.read() == b"main"
    with pytest.raises(AgentImageFailed, match="twice"):
        hostpython.write_tar([*entries, Entry("lib", "symlink", target="elsewhere")], io.BytesIO())


class FakeEngine:
    def __init__(self, result: RunResult) -> None:
        self.result = result
        self.runs: list[Any] = []

    def run(
        self,
        image: str,
        mounts: Any,
        labels: Any,
        script: str,
        args: Any = (),
        environment: Any = None,
    ) -> RunResult:
        self.runs.append((image, list(mounts), labels, script, list(args)))
        return self.result


@pytest.mark.parametrize(
    ("out", "code", "err", "verdict"),
    [
        (b'{"problems": []}\n{"openssl": true}\n', 0, b"", None),
        (
            b'{"problems": ["hashlib\'s SHA-256 is _sha256.sha256"]}\n{"openssl": false}\n',
            0,
            b"",
            "hashlib's SHA-256 is _sha256.sha256; the agent's selftest says sha256 is None",
        ),
        (b"", 127, b"sh: python3: not found\n", "sh: python3: not found"),
        (b"garbage\nmore\n", 0, b"", "its check printed something else than its report"),
    ],
)
def test_the_check_reads_its_report(out: bytes, code: int, err: bytes, verdict: str | None) -> None:
    engine = FakeEngine(RunResult(code, out, err))
    assert agent_image.check(engine, "img") == verdict  # type: ignore[arg-type]
    image, mounts, labels, script, args = engine.runs[0]
    assert image == "img" and mounts == [] and labels["io.voltool.role"] == "helper"
    assert "python3 -I -m voltool_agent selftest" in script and "_hashlib" in args[0]


def test_the_agent_answers_selftest(capsys: pytest.CaptureFixture[str]) -> None:
    from voltool.agent.main import main

    assert main(["selftest"]) == 0
    assert '"openssl": true' in capsys.readouterr().out
