"""The one seam between voltool and the Docker Engine.

Everything that talks to the engine goes through `Engine`; it returns plain
values and raises only voltool's own errors, so no other module imports
`docker.errors`. Helpers are short-lived containers: created with voltool's
labels and no network, removed in a `finally` whatever happens.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from voltool.engine import labels as L
from voltool.engine.endpoint import Endpoint
from voltool.engine.readahead import read_ahead
from voltool.errors import EngineError, EngineUnreachable, NoSpace, NotFound, VoltoolError
from voltool.words import quoted

if TYPE_CHECKING:
    # Imported where they are used: `voltool --help` and `--version` must not pay
    # for the Docker SDK and requests (about 0.1 s), nor shell completion.
    import docker
    import requests

# dockerd sends 32 KiB frames; reading 64 KiB at a time was fastest (DESIGN.md).
ARCHIVE_CHUNK = 64 * 1024
READ_AHEAD = 32  # chunks an archive stream is read ahead of its consumer (2 MiB)
# What a helper run keeps of its output: all of stdout up to this, else it fails;
# the last bytes of stderr, which only ever feed a one-line message.
RUN_STDOUT_MAX = 64 * 1024 * 1024
RUN_STDERR_KEEP = 64 * 1024
# How the engine's untar says that the filesystem it writes to is full (ENOSPC).
_NO_SPACE = "no space left on device"


class NameConflict(EngineError):
    """A container or volume with that name exists already (HTTP 409)."""


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    driver: str
    labels: dict[str, str]
    created: str
    options: dict[str, str] = field(default_factory=dict)  # the driver's options

    @property
    def in_memory(self) -> bool:
        """A tmpfs volume: its data lives only while a running container mounts it."""
        return self.driver == "local" and self.options.get("type") == "tmpfs"


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    status: str  # created | running | paused | restarting | exited | dead
    labels: dict[str, str]
    volumes: tuple[str, ...] = ()  # the volumes it mounts
    created: int = 0  # when the engine created it, in seconds (0: not known)

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True)
class Mount:
    volume: str  # a volume's name; with `bind`, a directory of the engine's host
    path: str
    read_only: bool = False
    bind: bool = False


@dataclass(frozen=True)
class ImageInfo:
    id: str
    labels: dict[str, str]
    size: int  # bytes


@dataclass(frozen=True)
class RunResult:
    exit_code: int
    stdout: bytes
    stderr: bytes


def parse_image_ref(ref: str) -> tuple[str, str | None]:
    """Split an image reference into its repository and its tag or digest (None: neither).

    The Docker SDK's own parser: a registry's port is not a tag
    (`registry:5000/busybox`), and a digest (`busybox@sha256:...`) comes back
    as `sha256:...`, which the engine's pull takes where a tag goes.
    """
    import docker.utils

    repository, tag = docker.utils.parse_repository_tag(ref)
    return str(repository), (str(tag) if tag else None)


def _shut_down(response: requests.Response) -> None:
    """Make a read in progress on `response` return at once (another thread's read).

    Closing the response would first wait for that read to finish: with a
    stalled volume, for the whole request timeout.
    """
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _translated(what: str, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """`chunks`, with errors raised while reading them translated."""
    with translated(what):
        yield from chunks


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn docker-py and requests errors raised inside into voltool errors."""
    import docker.errors
    import requests.exceptions

    try:
        yield
    except VoltoolError:
        raise
    except docker.errors.NotFound as e:
        raise NotFound(f"{what}: {_explain(e)}") from None
    except docker.errors.APIError as e:
        if e.status_code == 409:
            raise NameConflict(f"{what}: {_explain(e)}") from None
        raise EngineError(f"{what}: {_explain(e)}") from None
    except (requests.exceptions.ConnectionError, ConnectionError) as e:
        raise EngineUnreachable(f"{what}: lost the Docker Engine ({_first_line(e)})") from None
    except requests.exceptions.Timeout:
        raise EngineUnreachable(f"{what}: the Docker Engine did not answer in time") from None
    except docker.errors.DockerException as e:
        raise EngineError(f"{what}: {_first_line(e)}") from None


def _why_unreachable(e: BaseException) -> str:
    text = str(e)
    for marker, words in (
        ("FileNotFoundError", "no such socket"),
        ("PermissionError", "permission denied"),
        ("Connection refused", "connection refused"),
        ("timed out", "timed out"),
        ("Name or service not known", "unknown host"),
    ):
        if marker in text:
            return words
    return _first_line(e)


def _explain(e: docker.errors.APIError) -> str:
    return _first_line(e.explanation or e)


def _first_line(e: object) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class Engine:
    """A connection to one Docker Engine."""

    def __init__(self, client: docker.DockerClient, endpoint: Endpoint) -> None:
        self._client = client
        self._api = client.api
        self.endpoint = endpoint

    @classmethod
    def connect(cls, endpoint: Endpoint, timeout: int) -> Engine:
        """Connect and ping; raises EngineUnreachable if the engine does not answer."""
        import docker
        import docker.errors
        import requests.exceptions

        try:
            client = docker.DockerClient(
                base_url=endpoint.host,
                tls=endpoint.tls or False,
                timeout=timeout,
                use_ssh_client=endpoint.host.startswith("ssh://"),
            )
            client.ping()
        except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as e:
            raise EngineUnreachable(
                f"cannot reach the Docker Engine at {endpoint.host} ({endpoint.source}): "
                f"{_why_unreachable(e)}"
            ) from None
        return cls(client, endpoint)

    def close(self) -> None:
        self._client.close()

    def version(self) -> dict[str, Any]:
        with translated("engine version"):
            return dict(self._api.version())

    def identity(self) -> str:
        """The engine's own id (`docker info`'s ID): names the machine a snapshot came from."""
        with translated("engine info"):
            return str(self._api.info().get("ID") or "")

    # -- volumes -------------------------------------------------------------

    def volume(self, name: str) -> VolumeInfo:
        """The named volume; raises NotFound if there is none."""
        with translated(f"volume {quoted(name)}"):
            return _volume_info(self._api.inspect_volume(name))

    def volumes(self, label_filters: list[str] | None = None) -> list[VolumeInfo]:
        filters: dict[str, Any] = {"label": label_filters} if label_filters else {}
        with translated("list volumes"):
            answer = self._api.volumes(filters=filters or None)
        return [_volume_info(v) for v in (answer.get("Volumes") or [])]

    def create_volume(self, name: str, volume_labels: dict[str, str]) -> VolumeInfo:
        with translated(f"create volume {quoted(name)}"):
            return _volume_info(self._api.create_volume(name=name, labels=volume_labels))

    def remove_volume(self, name: str) -> None:
        """Remove a volume; a volume that is already gone is not an error."""
        with contextlib.suppress(NotFound), translated(f"remove volume {quoted(name)}"):
            self._api.remove_volume(name, force=True)

    # -- containers ----------------------------------------------------------

    def containers_using(self, volume: str) -> list[ContainerInfo]:
        """Containers (any state) that mount `volume`, voltool's own excluded."""
        with translated(f"containers using {quoted(volume)}"):
            found = self._api.containers(all=True, filters={"volume": volume})
        infos = [_container_info(c) for c in found]
        return [c for c in infos if c.labels.get(L.MANAGED) != "true"]

    def managed_containers(
        self, role: str | None = None, where: dict[str, str] | None = None
    ) -> list[ContainerInfo]:
        """voltool's containers, of `role` if given, carrying the labels `where` if given."""
        label = [f"{L.MANAGED}=true"] + ([f"{L.ROLE}={role}"] if role else [])
        label += [f"{k}={v}" for k, v in (where or {}).items()]
        with translated("list voltool containers"):
            found = self._api.containers(all=True, filters={"label": label})
        return [_container_info(c) for c in found]

    def remove_helpers_of(self, op: str) -> list[str]:
        """Remove every helper of operation `op`, also ones whose creation was cut short.

        Returns the failures, one line each; removing is best effort.
        """
        failures: list[str] = []
        for c in self.managed_containers(L.ROLE_HELPER):
            if c.labels.get(L.OP) == op:
                try:
                    self.remove_container(c.id)
                except VoltoolError as e:
                    failures.append(f"helper {c.short_id}: {e}")
        return failures

    def container(self, ref: str) -> ContainerInfo:
        with translated(f"container {quoted(ref)}"):
            data = self._api.inspect_container(ref)
        return ContainerInfo(
            id=data["Id"],
            name=data["Name"].lstrip("/"),
            status=data["State"]["Status"],
            labels=data["Config"].get("Labels") or {},
            volumes=_mounted_volumes(data),
        )

    def pause(self, cid: str) -> None:
        with translated(f"pause container {cid[:12]}"):
            self._api.pause(cid)

    def unpause(self, cid: str) -> None:
        with translated(f"unpause container {cid[:12]}"):
            self._api.unpause(cid)

    def stop(self, cid: str, timeout: int) -> None:
        with translated(f"stop container {cid[:12]}"):
            self._api.stop(cid, timeout=timeout)

    def wait_not_running(self, cid: str, seconds: float) -> str:
        """Wait up to `seconds` for the container to leave the running state; its status then.

        A stop that the engine began for a client that has since died goes on:
        this is how to see it end before starting the container again.
        """
        deadline = time.monotonic() + seconds
        while True:
            status = self.container(cid).status
            if status != "running" or time.monotonic() >= deadline:
                return status
            time.sleep(0.1)

    def start(self, cid: str) -> None:
        with translated(f"start container {cid[:12]}"):
            self._api.start(cid)

    def remove_container(self, cid: str) -> None:
        """Force-remove a container; one that is gone, or going, is not an error."""
        try:
            with contextlib.suppress(NotFound), translated(f"remove container {cid[:12]}"):
                self._api.remove_container(cid, force=True, v=False)
        except NameConflict as e:
            if "already in progress" not in str(e):
                raise
            self._wait_gone(cid)  # another client is removing it: wait for that

    def _wait_gone(self, cid: str, seconds: float = 30) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.container(cid)
            except NotFound:
                return
            time.sleep(0.1)
        raise EngineError(f"container {cid[:12]} is still there after {seconds:.0f} s")

    def create_container(
        self,
        image: str,
        mounts: Iterable[Mount],
        container_labels: dict[str, str],
        command: list[str] | None = None,
        name: str | None = None,
        environment: dict[str, str] | None = None,
        network: str = "none",
        keep_no_logs: bool = False,
    ) -> str:
        """Create (never start) a container, with no network unless `network` names one
        (`host`: the engine host's); returns its id.

        `environment` shows in `docker inspect`: never a secret."""
        binds = {
            m.volume: {
                "bind": m.path,
                "mode": ("ro" if m.read_only else "rw") + ("" if m.bind else ",nocopy"),
            }
            for m in mounts
        }
        host_config = self._api.create_host_config(
            binds=binds,
            network_mode=network,
            security_opt=["no-new-privileges"],
            log_config={"Type": "none", "Config": {}} if keep_no_logs else None,
        )
        with translated(f"create helper container from {quoted(image)}"):
            answer = self._api.create_container(
                image,
                command=command or ["-c", "exit 0"],
                entrypoint=["/bin/sh"],
                labels=container_labels,
                host_config=host_config,
                network_disabled=network == "none",
                name=name,
                environment=environment,
            )
        return str(answer["Id"])

    @contextlib.contextmanager
    def helper(
        self, image: str, mounts: Iterable[Mount], helper_labels: dict[str, str]
    ) -> Iterator[str]:
        """A created, never started helper for archive transfers; removed on every exit."""
        cid = self.create_container(image, mounts, helper_labels)
        try:
            yield cid
        finally:
            _cleanup(lambda: self.remove_container(cid))

    def run(
        self,
        image: str,
        mounts: Iterable[Mount],
        helper_labels: dict[str, str],
        script: str,
        args: Iterable[str] = (),
        environment: dict[str, str] | None = None,
        *,
        network: str = "none",
        files: dict[str, bytes] | None = None,
        keep_no_logs: bool = False,
        interrupt_grace: float = 0.0,
    ) -> RunResult:
        """Run `sh -c script args...` in a started helper, wait for it, and remove it.

        Its output is read from its own streams, attached before it starts (so
        nothing it writes is missed), not from the engine's logs: a daemon whose
        log driver is `none`, or one that cannot be read back, keeps no logs.
        `files` (path -> content) are written into the helper before it starts,
        root's alone (0600, in 0700 directories): how secrets reach it, where no
        `docker inspect` shows them; they go with the helper. `keep_no_logs`: the engine
        keeps none of its output (log driver `none`); voltool reads it all the same.
        `interrupt_grace`: cut short (Ctrl-C), the helper is sent SIGINT and given that
        many seconds to end on its own (restic then removes its lock) before it goes.
        """
        import docker.utils.socket

        command = ["-c", script, "sh", *args]
        cid = self.create_container(
            image,
            mounts,
            helper_labels,
            command,
            environment=environment,
            network=network,
            keep_no_logs=keep_no_logs,
        )
        try:
            if files:
                self.put_archive(cid, "/", iter([_private_files(files)]))
            with translated("run helper"):
                sock = self._api.attach_socket(
                    cid, params={"stdout": 1, "stderr": 1, "stream": 1, "logs": 0}
                )
                try:
                    self._api.start(cid)
                    out, err, overflow = _collect(docker.utils.socket.frames_iter(sock, False))
                except BaseException:
                    if interrupt_grace:
                        _cleanup(lambda: self._interrupt(cid, interrupt_grace))
                    raise
                finally:
                    with contextlib.suppress(OSError):
                        sock.close()
                status = self._api.wait(cid)
            if overflow:
                raise OutputTooLarge(
                    f"a helper wrote more than {RUN_STDOUT_MAX // 2**20} MiB of output"
                )
            return RunResult(int(status.get("StatusCode", 1)), out, err)
        finally:
            _cleanup(lambda: self.remove_container(cid))

    def _interrupt(self, cid: str, grace: float) -> None:
        """SIGINT to a running helper, then wait up to `grace` seconds for it to end."""
        with translated(f"interrupt helper {cid[:12]}"):
            self._api.kill(cid, signal="SIGINT")
        with contextlib.suppress(VoltoolError), self._timeout(grace), translated("wait"):
            self._api.wait(cid)

    # -- archives ------------------------------------------------------------

    def get_archive(self, cid: str, path: str) -> Generator[bytes, None, None]:
        """Stream the tar of `path` inside container `cid`, in chunks of up to 64 KiB.

        Close the generator (or exhaust it) before removing the container:
        closing it closes the HTTP response. docker-py's own get_archive leaves
        the response open when its generator is abandoned, and dockerd then
        holds the container until the response is read, so removing that
        container would wait forever.
        """
        what = f"read archive of {path}"
        url = f"{self._api.base_url}/v{self._api.api_version}/containers/{cid}/archive"
        with translated(what):
            response = self._api.get(
                url, params={"path": path}, stream=True, headers={"Accept-Encoding": "identity"}
            )
        try:
            if response.status_code == 404:
                raise NotFound(f"{what}: no such container or path")
            if response.status_code != 200:
                raise EngineError(
                    f"{what}: the engine answered {response.status_code}: {response.text[:200]}"
                )
            chunks = _translated(what, response.iter_content(ARCHIVE_CHUNK))
            yield from read_ahead(chunks, READ_AHEAD, lambda: _shut_down(response))
        finally:
            response.close()

    def path_exists(self, cid: str, path: str) -> bool:
        """Whether `path` exists inside container `cid` (started or not): one HEAD request."""
        url = f"{self._api.base_url}/v{self._api.api_version}/containers/{cid}/archive"
        with translated(f"look for {path}"):
            response = self._api.head(url, params={"path": path})
        if response.status_code == 404:
            return False
        if response.status_code != 200:
            raise EngineError(f"look for {path}: the engine answered {response.status_code}")
        return True

    def put_archive(self, cid: str, path: str, chunks: Iterable[bytes]) -> None:
        """Extract a tar stream at `path` inside container `cid`; streams with chunked encoding.

        Raises NoSpace, naming the volume mounted at `path`, if the filesystem
        it is written to fills up: the engine's untar then fails with ENOSPC.
        """
        import docker.errors

        what = f"write archive to {path}"
        full = False
        with translated(what):
            try:
                ok = self._api.put_archive(cid, path, chunks)
            except docker.errors.APIError as e:
                if _NO_SPACE not in str(e.explanation or "").lower():
                    raise
                full = True
        if full:
            raise NoSpace(
                f"no space left on {self._where(cid, path)} (writing an archive to {path})"
            )
        if not ok:
            raise EngineError(f"{what}: the engine refused the archive")

    def _where(self, cid: str, path: str) -> str:
        """Words for what holds `path` in container `cid`: the volume mounted there, if any."""
        try:
            with translated(f"container {cid[:12]}"):
                mounts = self._api.inspect_container(cid).get("Mounts") or []
        except VoltoolError:
            mounts = []
        best = ""
        volume = None
        for m in mounts:
            dest = str(m.get("Destination", "")).rstrip("/") or "/"
            inside = path == dest or path.startswith(dest.rstrip("/") + "/")
            if m.get("Type") == "volume" and inside and len(dest) > len(best):
                best, volume = dest, m.get("Name")
        return f"volume {quoted(volume)}" if volume else f"the filesystem of {path}"

    # -- images --------------------------------------------------------------

    def image_exists(self, ref: str) -> bool:
        try:
            with translated(f"image {quoted(ref)}"):
                self._api.inspect_image(ref)
        except NotFound:
            return False
        return True

    def image_id(self, ref: str) -> str:
        with translated(f"image {quoted(ref)}"):
            return str(self._api.inspect_image(ref)["Id"])

    def image(self, ref: str) -> ImageInfo:
        with translated(f"image {quoted(ref)}"):
            attrs = self._api.inspect_image(ref)
        labels = (attrs.get("Config") or {}).get("Labels") or {}
        return ImageInfo(str(attrs["Id"]), dict(labels), int(attrs.get("Size") or 0))

    def tag_image(self, ref: str, new_ref: str) -> None:
        """Give image `ref` the name `new_ref` too (moved there if another image had it)."""
        repository, tag = parse_image_ref(new_ref)
        with translated(f"tag image {quoted(ref)} as {quoted(new_ref)}"):
            self._api.tag(ref, repository, tag or "latest", force=True)

    def image_tags(self, repository: str) -> list[str]:
        """The names (`repository:tag`) of the local images of `repository`."""
        with translated(f"list the images of {quoted(repository)}"):
            found = self._api.images(name=repository)
        prefix = repository + ":"
        return sorted({t for i in found for t in i.get("RepoTags") or [] if t.startswith(prefix)})

    def remove_unused_image(self, ref: str) -> bool:
        """Remove image name `ref` unless a container (running or not) uses it; False if
        it is kept. Gone already is fine."""
        try:
            with translated(f"remove image {quoted(ref)}"):
                self._api.remove_image(ref, force=False)
        except NotFound:
            pass
        except EngineError:  # 409: in use
            return False
        return True

    def remove_image(self, ref: str) -> None:
        """Remove image `ref` (its tag, and the image if that was its last); gone is fine."""
        with contextlib.suppress(NotFound), translated(f"remove image {quoted(ref)}"):
            self._api.remove_image(ref, force=True)

    def pull(
        self, ref: str, on_status: Callable[[str], None], timeout: float | None = None
    ) -> None:
        """Pull image `ref` (`latest` if it names no tag or digest).

        `timeout`: seconds any one read from the engine may take, instead of the
        connection's own (an engine that cannot reach its registry may take long
        to say so).
        """
        repository, tag = parse_image_ref(ref)
        with self._timeout(timeout), translated(f"pull {quoted(ref)}"):
            events = self._api.pull(repository, tag=tag or "latest", stream=True, decode=True)
            for event in events:
                if "error" in event:
                    raise EngineError(f"pull {quoted(ref)}: {event['error']}")
                on_status(str(event.get("status", "")))

    @contextlib.contextmanager
    def _timeout(self, seconds: float | None) -> Iterator[None]:
        """Requests made inside wait at most `seconds` for each read (None: unchanged)."""
        if seconds is None:
            yield
            return
        saved = self._api.timeout
        self._api.timeout = seconds  # docker-py reads it for each request it makes
        try:
            yield
        finally:
            self._api.timeout = saved

    def import_image(self, tar: bytes | BinaryIO, ref: str, changes: list[str]) -> str:
        """Import a root filesystem tar (bytes, or a file streamed from where it is) as
        image `ref` (repository and tag); returns its id."""
        repository, tag = parse_image_ref(ref)
        with translated(f"import image {ref}"):
            self._api.import_image_from_data(
                tar, repository=repository, tag=tag or "latest", changes=changes
            )
        return self.image_id(ref)

    def build_image(
        self, context: BinaryIO, ref: str, image_labels: dict[str, str], timeout: float
    ) -> str:
        """Build image `ref` from a tar build context (with its Dockerfile), with no
        network and nothing pulled; returns its id."""
        with translated(f"build image {ref}"):
            events = self._api.build(
                fileobj=context,
                custom_context=True,
                tag=ref,
                labels=image_labels,
                rm=True,
                forcerm=True,
                pull=False,
                network_mode="none",
                timeout=timeout,
                decode=True,
            )
            for event in events:
                if "error" in event:
                    raise EngineError(f"build image {ref}: {_first_line(event['error'])}")
        return self.image_id(ref)


def _private_files(files: dict[str, bytes]) -> bytes:
    """A tar of `files` (absolute path -> content): 0600 files in 0700 directories, root's.
    Every directory on the way is in it: give paths in a directory of their own."""
    import io
    import tarfile

    out = io.BytesIO()
    made: set[str] = set()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in sorted(files.items()):
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                parent = "/".join(parts[:i])
                if parent not in made:
                    made.add(parent)
                    d = tarfile.TarInfo(parent)
                    d.type, d.mode = tarfile.DIRTYPE, 0o700
                    tar.addfile(d)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode = len(data), 0o600
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class OutputTooLarge(EngineError):
    """A helper's stdout was over RUN_STDOUT_MAX: what it read was larger than it should be."""


def _collect(frames: Iterable[tuple[int, bytes]]) -> tuple[bytes, bytes, bool]:
    """A helper's stdout and stderr from its demultiplexed frames, in bounded memory.

    Returns stdout (at most RUN_STDOUT_MAX bytes), the last RUN_STDERR_KEEP
    bytes of stderr, and whether stdout was longer. Everything is read to the
    end either way, so that the helper never blocks on a full pipe.
    """
    import docker.utils.socket

    out = bytearray()
    err = bytearray()
    overflow = False
    for stream, data in frames:
        if stream == docker.utils.socket.STDERR:
            err += data
            if len(err) > 2 * RUN_STDERR_KEEP:
                del err[:-RUN_STDERR_KEEP]
        elif not overflow:
            out += data
            if len(out) > RUN_STDOUT_MAX:
                overflow = True
                out.clear()
    return bytes(out), bytes(err[-RUN_STDERR_KEEP:]), overflow


def _cleanup(action: Callable[[], None]) -> None:
    """Run a clean-up step even if Ctrl-C arrives during it, then pass the Ctrl-C on.

    An engine error is tried again, briefly: a removal can fail for a moment
    ("device or resource busy" while the engine unmounts a layer). What still
    cannot be removed is not fatal: `voltool doctor` reports it and `voltool
    recover` removes it.
    """
    interrupted = False
    for attempt in range(3):
        try:
            action()
            break
        except KeyboardInterrupt:
            interrupted = True
        except VoltoolError:
            if attempt == 2:
                break
            time.sleep(0.2 * (attempt + 1))
    if interrupted:
        raise KeyboardInterrupt


def _volume_info(v: dict[str, Any]) -> VolumeInfo:
    return VolumeInfo(
        name=v["Name"],
        driver=v.get("Driver", ""),
        labels=v.get("Labels") or {},
        created=v.get("CreatedAt", ""),
        options=v.get("Options") or {},
    )


def _container_info(c: dict[str, Any]) -> ContainerInfo:
    names = c.get("Names") or [""]
    return ContainerInfo(
        id=c["Id"],
        name=names[0].lstrip("/"),
        status=c.get("State", ""),
        labels=c.get("Labels") or {},
        volumes=_mounted_volumes(c),
        created=int(c.get("Created") or 0),
    )


def _mounted_volumes(c: dict[str, Any]) -> tuple[str, ...]:
    return tuple(str(m["Name"]) for m in c.get("Mounts") or [] if m.get("Type") == "volume")
