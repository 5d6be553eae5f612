"""The compressions an export may use: zstd (default), gzip, none.

Writing wraps a binary file; reading detects the compression from the first
bytes (never from a file name) and hands out the decompressed stream in chunks
of at most `CHUNK` bytes, so a small input that expands to terabytes (a
decompression bomb) costs no more memory than any other: the reader above
stops asking once its caps are reached, and nothing more is decompressed.
A truncated or corrupt compressed stream is an IntegrityError.
"""

from __future__ import annotations

import enum
import gzip
import itertools
import zlib
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import BinaryIO, cast

try:  # Python 3.14+: the standard library's (PEP 784)
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # its backport, the same module for 3.11-3.13
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]

from voltool.errors import IntegrityError, UsageError
from voltool.words import quoted

CHUNK = 64 * 1024
ZSTD_LEVEL = 3  # zstd's own default: about as fast as the engine delivers data

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_GZIP_MAGIC = b"\x1f\x8b"


class Compression(enum.Enum):
    ZSTD = "zstd"
    GZIP = "gzip"
    NONE = "none"

    @property
    def suffix(self) -> str:
        return {"zstd": ".tar.zst", "gzip": ".tar.gz", "none": ".tar"}[self.value]


_SUFFIXES = (
    (".tar.zst", Compression.ZSTD),
    (".tzst", Compression.ZSTD),
    (".zst", Compression.ZSTD),
    (".tar.gz", Compression.GZIP),
    (".tgz", Compression.GZIP),
    (".gz", Compression.GZIP),
    (".tar", Compression.NONE),
)


def known_suffixes() -> tuple[str, ...]:
    """The file name suffixes that name a compression, longest first within each."""
    return tuple(suffix for suffix, _ in _SUFFIXES)


def from_filename(name: str) -> Compression | None:
    """The compression a file name asks for by its suffix, or None if it names none."""
    lower = name.lower()
    for suffix, kind in _SUFFIXES:
        if lower.endswith(suffix):
            return kind
    return None


def choose(requested: str | None, filename: str | None) -> Compression:
    """`--compress` if given, else the file name's suffix, else zstd; contradictions are errors."""
    by_name = from_filename(filename) if filename else None
    if requested is None:
        return by_name or Compression.ZSTD
    try:
        kind = Compression(requested)
    except ValueError:
        raise UsageError(
            f"unknown compression {quoted(requested)}: use zstd, gzip or none"
        ) from None
    if by_name is not None and by_name is not kind:
        raise UsageError(
            f"{filename} names {by_name.value} compression but --compress says {kind.value}"
        )
    return kind


def detect(head: bytes) -> Compression:
    """The compression of a stream that starts with `head` (at least 4 bytes when there are)."""
    if head.startswith(_ZSTD_MAGIC) or _is_skippable_frame(head):
        return Compression.ZSTD
    if head.startswith(_GZIP_MAGIC):
        return Compression.GZIP
    return Compression.NONE


def writer(out: BinaryIO, kind: Compression) -> AbstractContextManager[BinaryIO]:
    """A file that compresses what is written to it into `out`; close it to finish the stream.

    Closing does not close `out`. zstd frames carry a content checksum, so a
    flipped bit is caught at import even before the manifest's hashes are.
    """
    if kind is Compression.ZSTD:
        options = {
            zstd.CompressionParameter.compression_level: ZSTD_LEVEL,
            zstd.CompressionParameter.checksum_flag: 1,
        }
        return cast(BinaryIO, zstd.ZstdFile(out, "wb", options=options))
    if kind is Compression.GZIP:
        return cast(BinaryIO, gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0))
    return _Uncompressed(out)


def _is_skippable_frame(head: bytes) -> bool:
    """A zstd skippable frame (magic 0x184D2A50-5F), as pzstd starts its output with."""
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50


class _Uncompressed(AbstractContextManager[BinaryIO]):
    """`out` itself, as a context manager that leaves it open."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out

    def __enter__(self) -> BinaryIO:
        return self._out

    def __exit__(self, *exc: object) -> None:
        self._out.flush()


class _Prefixed:
    """A readable file: `head` (bytes already read to detect the format), then `rest`."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                out, self._head = self._head, b""
                return out if n < 0 else out + self._rest.read(n - len(out))
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._rest.read(n)

    def readable(self) -> bool:
        return True


def reader(source: BinaryIO) -> tuple[Compression, Iterator[bytes]]:
    """Detect `source`'s compression; return it and the decompressed stream as bounded chunks."""
    head = b""
    while len(head) < 4:
        more = source.read(4 - len(head))
        if not more:
            break
        head += more
    kind = detect(head)
    prefixed = _Prefixed(head, source)
    if kind is Compression.NONE:
        return kind, _chunks(cast(BinaryIO, prefixed), kind)
    if kind is Compression.ZSTD:
        file = cast(BinaryIO, zstd.ZstdFile(prefixed, "rb"))
    else:
        file = cast(BinaryIO, gzip.GzipFile(fileobj=cast(BinaryIO, prefixed), mode="rb"))
    return kind, _chunks(file, kind)


def _chunks(file: BinaryIO, kind: Compression) -> Iterator[bytes]:
    while True:
        try:
            chunk = file.read(CHUNK)
        except EOFError:
            raise IntegrityError(f"{kind.value} stream is truncated") from None
        except (zstd.ZstdError, gzip.BadGzipFile, zlib.error) as e:
            raise IntegrityError(f"{kind.value} stream is corrupt ({e})") from None
        if not chunk:
            return
        yield chunk


def plain_or_gzip(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The bytes of a stream that is either plain or gzip-compressed (a stored manifest:
    gzip from the agent's `copy --gzip`, plain in older stores), told apart by its first
    bytes; IntegrityError past `limit` bytes once decompressed, or if it is corrupt."""
    source = iter(chunks)
    head = b""
    for chunk in source:
        head += chunk
        if len(head) >= len(_GZIP_MAGIC):
            break
    if not head.startswith(_GZIP_MAGIC):
        yield head
        yield from source
        return
    d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip's header and trailer
    total = 0
    try:
        for chunk in itertools.chain((head,), source):
            while chunk:
                out = d.decompress(chunk, CHUNK)
                total += len(out)
                if total > limit:
                    raise IntegrityError(f"a compressed manifest holds more than {limit} bytes")
                if out:
                    yield out
                chunk = d.unconsumed_tail
                if d.eof:
                    if d.unused_data or chunk:
                        # The agent writes one gzip member and nothing after it; what
                        # follows would be read by some readers and not by others.
                        raise IntegrityError("a compressed manifest has data after its end")
                    break
        if not d.eof:
            raise IntegrityError("a compressed manifest is cut short")
    except zlib.error as e:
        raise IntegrityError(f"a compressed manifest is corrupt ({e})") from None
