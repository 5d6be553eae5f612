"""One manifest entry, its JSON line, and the fields the tree digest covers.

A manifest line is a JSON object, keys sorted, no spaces, ASCII only, that
ends with b"\\n". Byte strings (path, target, link, xattr names) are spelled as
`names.pack` spells them. Fields:

    path      the entry's path (names.ROOT, ".", for the root)
    type      file | dir | symlink | fifo | socket | char | block
    mode      permission bits with setuid, setgid and sticky (st_mode & 0o7777)
    uid, gid  owner
    mtime_ns, atime_ns, ctime_ns   times in ns since the epoch (any sign, any size)
    ino, dev, nlink                identity, for change detection only
    size      files only: bytes of content
    alloc     files only: bytes allocated on disk (st_blocks * 512), shows sparseness
    sha256    files only: hex SHA-256 of the content
    target    symlinks only: the link's target, as bytes, never resolved
    link      files only, when the file is a hard link to an earlier entry: the
              path of the first entry (in stream order) of its hard-link group;
              the first entry itself carries no link
    rdev      char and block devices only: [major, minor]
    xattrs    present if the entry has any: [[name, base64 of value], ...],
              sorted by name bytes (includes security.* and system.posix_acl_*)
"""

from __future__ import annotations

import base64
import json
import os
import re
import stat
from dataclasses import dataclass
from typing import Any

from .names import ROOT, b64decode, is_valid_path, pack, shown, unpack

TYPES: dict[int, str] = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_INT_FIELDS = ("mode", "uid", "gid", "mtime_ns", "atime_ns", "ctime_ns", "ino", "dev", "nlink")
_KNOWN = {"path", "type", "size", "alloc", "sha256", "target", "link", "rdev", "xattrs"}
_KNOWN.update(_INT_FIELDS)

Xattrs = tuple[tuple[bytes, bytes], ...]


def type_of(st: os.stat_result) -> str:
    return TYPES.get(stat.S_IFMT(st.st_mode), "unknown")


@dataclass(frozen=True, slots=True)
class Entry:
    """What the manifest says about one path. Immutable; build a new one to change it."""

    path: bytes
    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    ctime_ns: int
    ino: int
    dev: int
    nlink: int
    size: int = 0
    alloc: int = 0
    sha256: str | None = None
    target: bytes | None = None
    link: bytes | None = None
    rdev: tuple[int, int] | None = None
    xattrs: Xattrs = ()

    @classmethod
    def of(cls, path: bytes, st: os.stat_result, **more: Any) -> Entry:
        """The entry for `path` as `st` (an lstat or fstat) describes it, plus `more` fields."""
        kind = type_of(st)
        if kind == "file":
            more.setdefault("size", st.st_size)
            more.setdefault("alloc", st.st_blocks * 512)
        if kind in ("char", "block"):
            more.setdefault("rdev", (os.major(st.st_rdev), os.minor(st.st_rdev)))
        return cls(
            path=path,
            type=kind,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns,
            atime_ns=st.st_atime_ns,
            ctime_ns=st.st_ctime_ns,
            ino=st.st_ino,
            dev=st.st_dev,
            nlink=st.st_nlink,
            **more,
        )

    def digest_fields(self) -> dict[str, Any]:
        """The fields the tree digest covers (see digest.py): no times, no identity."""
        d: dict[str, Any] = {
            "path": pack(self.path),
            "type": self.type,
            "mode": self.mode,
            "uid": self.uid,
            "gid": self.gid,
        }
        if self.type == "file":
            d["size"] = self.size
            d["sha256"] = self.sha256
        if self.target is not None:
            d["target"] = pack(self.target)
        if self.link is not None:
            d["link"] = pack(self.link)
        if self.rdev is not None:
            d["rdev"] = list(self.rdev)
        if self.xattrs:
            d["xattrs"] = [[pack(k), base64.b64encode(v).decode("ascii")] for k, v in self.xattrs]
        return d

    def fields(self) -> dict[str, Any]:
        """Every field, as the manifest line spells it."""
        d = self.digest_fields()
        for name in ("mtime_ns", "atime_ns", "ctime_ns", "ino", "dev", "nlink"):
            d[name] = getattr(self, name)
        if self.type == "file":
            d["alloc"] = self.alloc
        return d

    def line(self) -> bytes:
        """The manifest line, with its newline."""
        return self.lines()[0]

    def digest_line(self) -> bytes:
        return self.lines()[1]

    def lines(self) -> tuple[bytes, bytes]:
        """The manifest line and the digest line, with their newlines: exactly
        `canonical(self.fields())` and `canonical(self.digest_fields())`, spelled here
        key by key in sorted order (the agent writes one pair per entry: json.dumps of
        two dicts cost more than the rest of a small file's copy)."""
        is_file = self.type == "file"
        # The digest's keys, sorted: gid link mode path rdev sha256 size target type uid xattrs
        d = [f'"gid":{self.gid}']
        if self.link is not None:
            d.append('"link":' + _packed(self.link))
        d.append(f'"mode":{self.mode}')
        path = '"path":' + _packed(self.path)
        d.append(path)
        if self.rdev is not None:
            d.append(f'"rdev":[{self.rdev[0]},{self.rdev[1]}]')
        if is_file:
            d.append('"sha256":' + ("null" if self.sha256 is None else _string(self.sha256)))
            d.append(f'"size":{self.size}')
        if self.target is not None:
            d.append('"target":' + _packed(self.target))
        d.append('"type":' + _string(self.type))
        d.append(f'"uid":{self.uid}')
        if self.xattrs:
            d.append('"xattrs":' + _xattrs(self.xattrs))
        digest = "{" + ",".join(d) + "}\n"
        # The line's keys, sorted: alloc atime_ns ctime_ns dev gid ino link mode mtime_ns
        # nlink path rdev sha256 size target type uid xattrs
        head = (
            (f'"alloc":{self.alloc},' if is_file else "")
            + f'"atime_ns":{self.atime_ns},"ctime_ns":{self.ctime_ns},"dev":{self.dev},'
            + f'"gid":{self.gid},"ino":{self.ino},'
        )
        mid = f'"mtime_ns":{self.mtime_ns},"nlink":{self.nlink},'
        # d[0] is gid (in head already); link and mode come before mtime_ns, path on after.
        at = d.index(path)
        line = "{" + head + "".join(x + "," for x in d[1:at]) + mid + ",".join(d[at:]) + "}\n"
        return line.encode("ascii"), digest.encode("ascii")

    @classmethod
    def parse(cls, line: bytes) -> Entry:
        """An entry from a manifest line (newline optional); ValueError if it is not one.

        Every field is checked for type and range: a manifest read back from a
        store is data, not something to trust.
        """
        try:
            raw = json.loads(line)
        except (ValueError, RecursionError):
            raise ValueError(f"not JSON: {shown(line[:80])}") from None
        if not isinstance(raw, dict) or not set(raw) <= _KNOWN:
            raise ValueError(f"not a manifest entry: {shown(line[:80])}")
        try:
            return _from_fields(raw)
        except (KeyError, TypeError) as e:
            raise ValueError(f"bad manifest entry ({e}): {shown(line[:80])}") from None


def _int(raw: dict[str, Any], name: str, minimum: int | None = 0) -> int:
    value = raw[name]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name} is not an integer")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} is below {minimum}")
    return value


def _from_fields(raw: dict[str, Any]) -> Entry:
    path = unpack(raw["path"])
    kind = raw["type"]
    if not is_valid_path(path):
        raise ValueError(f"path {path!r:.80} is not a normal relative path")
    if kind not in TYPES.values() or (path == ROOT and kind != "dir"):
        raise ValueError(f"bad type {kind!r:.20}")
    ints = {n: _int(raw, n, None if n.endswith("time_ns") else 0) for n in _INT_FIELDS}
    if ints["mode"] > 0o7777:
        raise ValueError("mode has bits beyond 0o7777")
    is_file = kind == "file"
    if is_file != ("sha256" in raw) or is_file != ("size" in raw) or is_file != ("alloc" in raw):
        raise ValueError("size, alloc and sha256 belong to files, and files have them")
    sha = raw.get("sha256")
    if sha is not None and not (isinstance(sha, str) and _HEX64.fullmatch(sha)):
        raise ValueError("sha256 is not 64 lower-case hex digits")
    if (kind == "symlink") != ("target" in raw):
        raise ValueError("target belongs to symlinks, and symlinks have one")
    if "link" in raw and not is_file:
        raise ValueError("link belongs to files only")
    if (kind in ("char", "block")) != ("rdev" in raw):
        raise ValueError("rdev belongs to devices, and devices have one")
    rdev = raw.get("rdev")
    if rdev is not None and not (
        isinstance(rdev, list) and len(rdev) == 2 and all(type(x) is int and x >= 0 for x in rdev)
    ):
        raise ValueError("rdev is not [major, minor]")
    xattrs: list[tuple[bytes, bytes]] = []
    for pair in raw.get("xattrs", []):
        if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], str)):
            raise ValueError("xattrs is not a list of [name, base64 value]")
        xattrs.append((unpack(pair[0]), b64decode(pair[1])))
    if [k for k, _ in xattrs] != sorted({k for k, _ in xattrs}) or ("xattrs" in raw and not xattrs):
        raise ValueError("xattrs are not sorted, unique and non-empty")
    return Entry(
        path=path,
        type=kind,
        size=_int(raw, "size") if is_file else 0,
        alloc=_int(raw, "alloc") if is_file else 0,
        sha256=sha,
        target=unpack(raw["target"]) if "target" in raw else None,
        link=_link(raw),
        rdev=(rdev[0], rdev[1]) if rdev is not None else None,
        xattrs=tuple(xattrs),
        **ints,
    )


def _link(raw: dict[str, Any]) -> bytes | None:
    if "link" not in raw:
        return None
    link = unpack(raw["link"])
    if link == ROOT or not is_valid_path(link):
        raise ValueError("link is not a path")
    return link


_string = json.encoder.encode_basestring_ascii  # json.dumps's own, with ensure_ascii


def _packed(raw: bytes) -> str:
    """`names.pack(raw)` as canonical JSON."""
    try:
        return _string(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return '{"b64":"' + base64.b64encode(raw).decode("ascii") + '"}'


def _xattrs(pairs: Xattrs) -> str:
    return (
        "["
        + ",".join(
            "[" + _packed(k) + ',"' + base64.b64encode(v).decode("ascii") + '"]' for k, v in pairs
        )
        + "]"
    )


def canonical(d: dict[str, Any]) -> bytes:
    """One spelling of `d` as JSON: sorted keys, no spaces, ASCII (non-ASCII as \\u escapes)."""
    return json.dumps(d, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")
