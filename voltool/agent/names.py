"""Paths as bytes: the one order every stream uses, and how bytes are spelled in JSON.

A path is the bytes of an entry's name relative to the tree's root, its
components joined by b"/"; the root itself is b".". Names are never decoded
to look them up: a name that is not UTF-8 is as good as any other.
"""

from __future__ import annotations

import base64
import binascii

ROOT = b"."


def shown(raw: bytes | str) -> str:
    """`raw` for a message, in single quotes: what is not UTF-8 or not printable escaped."""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    return "'" + "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text) + "'"


def join(parent: bytes, name: bytes) -> bytes:
    """The path of `name` inside the directory at `parent`."""
    return name if parent == ROOT else parent + b"/" + name


def order_key(path: bytes) -> bytes:
    """The key every stream is sorted by, ascending: compare keys, never paths.

    The key is the path with each b"/" replaced by b"\\0" (which no name can
    hold), and b"" for the root. Ascending keys are exactly a depth-first
    preorder walk that visits each directory's children sorted by their name
    bytes: a directory comes right before its subtree, and "a/b" before "a-c"
    (a plain byte comparison of paths would put "a-c" first, since "-" < "/").
    """
    return b"" if path == ROOT else path.replace(b"/", b"\0")


def pack(raw: bytes) -> str | dict[str, str]:
    """`raw` as JSON: a string if it is valid UTF-8, else {"b64": base64 of the bytes}.

    Every byte string round-trips through pack and unpack exactly.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(raw).decode("ascii")}


def unpack(value: object) -> bytes:
    """The bytes that `pack` spelled as `value`; ValueError if it is not such a spelling."""
    if isinstance(value, str):
        return value.encode("utf-8")  # a lone surrogate cannot encode: ValueError
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        return b64decode(value["b64"])
    raise ValueError(f"not a packed byte string: {value!r:.80}")


def b64decode(text: str) -> bytes:
    """Strict base64 (ValueError on anything else)."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as e:
        raise ValueError(f"bad base64: {e}") from None


def is_valid_path(path: bytes) -> bool:
    """Relative, without empty, "." or ".." components or NUL bytes (or the root itself)."""
    if path == ROOT:
        return True
    if not path or b"\0" in path:
        return False
    return all(part not in (b"", b".", b"..") for part in path.split(b"/"))
