"""What a user sees around the work: containers' pause and stop times, progress bars on a
terminal (and none without one), the confirmation prompt, and shell completion."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.integration.conftest import BIG
from tests.integration.dockertools import F1, Docker, hold_env, records, voltool, wait_for


def _snap(vol: str, env: dict[str, str] | None = None) -> dict[str, object]:
    r = voltool("snapshot", "--json", "--no-quiesce", vol, env=env)
    assert r.code == 0, r.err
    return records(r.out)[0]  # type: ignore[no-any-return]


def test_snapshot_says_what_it_paused_and_for_how_long(
    volume: Callable[..., str], container: Callable[..., str]
) -> None:
    vol = volume("echo a > /v/a")
    app = container([vol])
    r = voltool("snapshot", vol)
    assert r.code == 0, r.err
    assert re.search(rf"^voltool: paused {app} for \d+\.\d s$", r.err, re.M), r.err
    r = voltool("snapshot", "--json", vol)
    assert r.code == 0, r.err
    (containers,) = [s["containers"] for s in records(r.out)]
    assert [c["name"] for c in containers] == [app]
    assert 0 <= containers[0]["paused_s"] < 60 and set(containers[0]) == {"name", "paused_s"}


def test_snapshot_stop_and_restore_say_what_they_stopped(
    dk: Docker, volume: Callable[..., str], container: Callable[..., str]
) -> None:
    vol = volume("echo a > /v/a")
    app = container([vol])
    r = voltool("snapshot", "--stop", "--stop-timeout", "1", vol)
    assert r.code == 0, r.err
    assert re.search(rf"^voltool: stopped {app} for \d+\.\d s$", r.err, re.M), r.err
    sid = re.search(r"^snapshot ([0-9a-f]{16}) ", r.out, re.M)
    assert sid, r.out
    r = voltool("restore", "--yes", "--stop-timeout", "1", sid.group(1))
    assert r.code == 0, r.err
    assert re.search(rf"^voltool: stopped {app} for \d+\.\d s$", r.err, re.M), r.err
    r = voltool("restore", "--yes", "--json", "--stop-timeout", "1", sid.group(1))
    assert r.code == 0, r.err
    (held,) = json.loads(r.out)["containers"]
    assert held["name"] == app and 0 <= held["stopped_s"] < 60
    assert dk.status(app) == "running"


class _Pty:
    """voltool on a pseudo-terminal (stdin, stdout and stderr), read with a deadline."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        import pty

        self.primary, secondary = pty.openpty()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voltool", *args],
            stdin=secondary,
            stdout=secondary,
            stderr=secondary,
            env={**os.environ, "TERM": "xterm", "COLUMNS": "120", **(env or {})},
            start_new_session=True,
        )
        os.close(secondary)
        self.text = ""

    def read_until(self, pattern: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text):
            left = deadline - time.monotonic()
            assert left > 0, f"no {pattern!r} in {self.text!r}"
            if select.select([self.primary], [], [], min(left, 0.2))[0]:
                try:
                    self.text += os.read(self.primary, 65536).decode(errors="replace")
                except OSError:  # the child is gone and the terminal closed
                    assert re.search(pattern, self.text), f"no {pattern!r} in {self.text!r}"
        return self.text

    def write(self, text: str) -> None:
        os.write(self.primary, text.encode())

    def close(self) -> int:
        try:
            code = self.proc.wait(timeout=120)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            os.close(self.primary)
        return code


def test_typed_ahead_input_is_not_the_answer(dk: Docker, volume: Callable[..., str]) -> None:
    vol = volume("echo a > /v/a")
    s = _snap(vol)
    dk.run({vol: "/v"}, "echo changed > /v/a")
    t = _Pty("restore", str(s["id"]))
    t.write(vol + "\n")  # typed while the plan is being computed
    t.read_until(r"to restore into it: ")
    time.sleep(1)
    assert t.proc.poll() is None, "the prompt took what was typed before it appeared"
    t.write("no\n")
    assert t.close() == 10
    assert dk.listing(vol).entries["a"]  # still there, unchanged below
    assert voltool("digest", vol).out.strip() != s["tree_digest"]


def test_restore_shows_its_staging_on_a_terminal_and_not_with_quiet(
    tmp_path: Path, volume: Callable[..., str]
) -> None:
    # Format 1 streams the data through voltool, which counts it: a percentage. (Format
    # 2's agent copies in the engine: a spinner says what is being done.)
    vol = volume(BIG)
    s = _snap(vol, env=F1)
    hold = tmp_path / "hold"
    hold.write_text("")
    t = _Pty("restore", "--yes", str(s["id"]), env=hold_env("staging-data", hold))
    try:
        wait_for(lambda: hold.read_text().strip(), what="the hold point")
        text = t.read_until(rf"staging {vol} .*\d+%.*MiB.*left")
    finally:
        hold.unlink()
    assert t.close() == 0, text
    hold.write_text("")
    t = _Pty("--quiet", "restore", "--yes", str(s["id"]), env=hold_env("staging-data", hold))
    try:
        wait_for(lambda: hold.read_text().strip(), what="the hold point")
        time.sleep(1.5)
    finally:
        hold.unlink()
    text = t.read_until(r"to undo: voltool restore")
    assert t.close() == 0
    assert "staging" not in text and "%" not in text, text


def _complete(words: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voltool"],
        env={
            **os.environ,
            "_VOLTOOL_COMPLETE": "complete_bash",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split(" ")) - 1),
            **(env or {}),
        },
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_completion_of_volumes_and_snapshots(volume: Callable[..., str]) -> None:
    vol = volume("echo a > /v/a")
    s = _snap(vol)
    r = _complete(f"voltool digest {vol[:-2]}")
    assert r.returncode == 0 and r.stdout.split() == [vol], r
    r = _complete(f"voltool restore x --to {vol[:-2]}")
    assert r.stdout.split() == [vol], r
    r = _complete(f"voltool inspect {str(s['id'])[:12]}")
    assert r.stdout.split() == [s["id"]], r
    down = _complete("voltool digest vt-", env={"DOCKER_HOST": "unix:///nonexistent.sock"})
    assert (down.returncode, down.stdout.strip(), down.stderr) == (0, "", "")
