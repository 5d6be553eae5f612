"""The helper image: a small image with a POSIX shell, pulled or built offline.

For the default image ("busybox"): use a local busybox image if there is one,
else the image voltool built earlier from this host's static busybox, else
pull busybox, else build it from the static busybox binary with an import.
An image named explicitly must exist or be pullable.

Whatever its origin, an image must run voltool's helper programs (a POSIX
shell at /bin/sh, a writable /tmp): that is checked once per image id, with
one short helper, and remembered in the state directory.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
from dataclasses import dataclass

from voltool.config import DEFAULT_HELPER_IMAGE
from voltool.engine import labels as L
from voltool.engine.client import Engine
from voltool.errors import EngineError, NotFound, UsageError, VoltoolError
from voltool.ids import new_id
from voltool.owner import current
from voltool.report import Reporter
from voltool.sh import program
from voltool.state import state_dir
from voltool.words import quoted

BUILT_REPOSITORY = "voltool/helper"


@dataclass(frozen=True)
class ImageStatus:
    image: str | None  # the image that would be used, when one is there already
    how: str  # words: how it was found or would be had


def busybox_digest(busybox: str) -> str:
    """The SHA-256 of the static busybox binary; raises NotFound if it cannot be read."""
    try:
        with open(busybox, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise NotFound(
            f"cannot read the static busybox {quoted(busybox)} ({e.strerror}); install Debian's "
            "busybox-static or set VOLTOOL_BUSYBOX"
        ) from None


def built_tag(busybox: str) -> str:
    """The tag of the image built from `busybox`: it names the binary's hash."""
    return f"{BUILT_REPOSITORY}:busybox-{busybox_digest(busybox)[:12]}"


def busybox_applets(busybox: str) -> list[str]:
    """The applets `busybox` has, each a name to link in /bin (itself left out)."""
    try:
        names = (
            subprocess.run([busybox, "--list"], capture_output=True, check=True, timeout=30)
            .stdout.decode()
            .split()
        )
    except (OSError, subprocess.SubprocessError) as e:
        raise NotFound(f"{busybox} is not a runnable busybox: {e}") from None
    return [n for n in names if n != "busybox" and "/" not in n]


def status(engine: Engine, configured: str, busybox: str) -> ImageStatus:
    """Which image would be used, without pulling or building anything."""
    if engine.image_exists(configured):
        return ImageStatus(configured, f"{configured} (present)")
    if configured != DEFAULT_HELPER_IMAGE:
        return ImageStatus(None, f"{configured} is missing; it would be pulled")
    try:
        tag = built_tag(busybox)
    except NotFound:
        return ImageStatus(None, f"busybox is missing and {busybox} is not readable: would pull")
    if engine.image_exists(tag):
        return ImageStatus(tag, f"{tag} (built from {busybox})")
    return ImageStatus(None, f"busybox is missing; would pull it, else build from {busybox}")


def ensure(engine: Engine, configured: str, busybox: str, reporter: Reporter) -> str:
    """Return a helper image present in the engine and able to run voltool's helpers,
    pulling or building it if need be; raises UsageError for an image that cannot."""
    image = _present(engine, configured, busybox, reporter)
    reason = unusable(engine, image)
    if reason:
        raise UsageError(
            f"helper image {quoted(image)} cannot run voltool's helpers: {reason}; "
            "choose another with --helper-image"
        )
    return image


def _present(engine: Engine, configured: str, busybox: str, reporter: Reporter) -> str:
    found = status(engine, configured, busybox)
    if found.image:
        return found.image
    reporter.note(f"pulling helper image {configured} (once)")
    try:
        engine.pull(configured, lambda s: None)
        return configured
    except VoltoolError as e:
        if configured != DEFAULT_HELPER_IMAGE:
            raise NotFound(
                f"helper image {quoted(configured)} is missing and cannot be pulled: {e}"
            ) from None
    reporter.note(f"no registry reachable: building the helper image from {busybox}")
    return build(engine, busybox)


# What every helper program needs: /bin/sh, and a /tmp it can write to.
_CHECKED = "helper-images"  # in the state directory: ids of images that passed, one a line


def unusable(engine: Engine, image: str) -> str | None:
    """Why `image` cannot run voltool's helper programs, or None if it can.

    Costs one started helper the first time an image id is seen; an image that
    passed is remembered (by id, so a tag moved to another image is checked
    again) in the state directory. Engine errors that say nothing about the
    image are raised, not taken for a verdict.
    """
    image_id = engine.image_id(image)
    if image_id in passed():
        return None
    labels = L.managed(L.ROLE_HELPER, new_id(), current().token())
    try:
        result = engine.run(image, [], labels, program("helper-probe"))
    except EngineError as e:
        text = str(e)
        if "/bin/sh" in text or "executable file not found" in text:
            return "it has no /bin/sh"
        raise
    if result.exit_code != 0:
        return "its /tmp is missing or not writable"
    remember(image_id)
    return None


def passed(name: str = _CHECKED) -> set[str]:
    """Ids of the images that passed a check, from file `name` of the state directory."""
    try:
        return set((state_dir() / name).read_text().split())
    except OSError:
        return set()


def remember(image_id: str, name: str = _CHECKED) -> None:
    """Best effort: without a writable state directory the check is only repeated."""
    try:
        state_dir().mkdir(parents=True, exist_ok=True)
        with open(state_dir() / name, "a") as f:
            f.write(image_id + "\n")
    except OSError:
        pass


def build(engine: Engine, busybox: str) -> str:
    """Build the helper image from a static busybox binary with an import; returns its tag.

    The tag names the binary's hash: if it is there, that image is this one,
    and building it again would only leave the old one behind, untagged.
    """
    tag = built_tag(busybox)
    if engine.image_exists(tag):
        return tag
    applets = busybox_applets(busybox)
    with open(busybox, "rb") as f:
        binary = f.read()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(binary), 0o755
        tar.addfile(info, io.BytesIO(binary))
        for name in applets:
            link = tarfile.TarInfo(f"bin/{name}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
    engine.import_image(
        buf.getvalue(),
        tag,
        # Not io.voltool.managed: containers inherit image labels, and that one marks
        # voltool's own helpers and locks.
        ["ENV PATH=/bin", f"LABEL {L.IMAGE}={L.IMAGE_HELPER}"],
    )
    return tag


def default_busybox_present(busybox: str) -> bool:
    return os.access(busybox, os.X_OK)
