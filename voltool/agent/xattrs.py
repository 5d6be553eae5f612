"""Extended attributes, read and written without following symlinks.

All of them are kept, whatever their namespace: user.*, trusted.*,
security.* (security.capability among them) and the POSIX ACLs stored as
system.posix_acl_access and system.posix_acl_default.

Entries that cannot be opened without side effects (symlinks, FIFOs, devices,
sockets) are reached by name: the process's working directory is moved to
their parent's fd with fchdir and the name looked up relative to it, with
follow_symlinks=False. That is as safe as dir_fd= (which the xattr calls
lack), and needs no /proc. The agent is single-threaded, so the working
directory is its own.
"""

from __future__ import annotations

import errno
import os

from .entry import Xattrs

# Filesystems or entries without xattr support: nothing to read.
_UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS)
# A name listed and then removed before it was read.
_GONE = (errno.ENODATA,)


def read(target: int | bytes, dir_fd: int | None = None) -> Xattrs:
    """The xattrs of an open fd, or of `target` (a name) in directory `dir_fd`; sorted by name.

    OSError other than "not supported" propagates (ENOENT: the entry vanished).
    """
    if dir_fd is not None:
        os.fchdir(dir_fd)
    follow = not isinstance(target, bytes)  # an fd is not a path: nothing to follow
    try:
        names = os.listxattr(target, follow_symlinks=follow)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return ()
        raise
    result = []
    for name in names:
        try:
            value = os.getxattr(target, name, follow_symlinks=follow)
        except OSError as e:
            if e.errno in _GONE:
                continue
            raise
        result.append((os.fsencode(name), value))
    result.sort()
    return tuple(result)


def write(target: int | bytes, xattrs: Xattrs, dir_fd: int | None = None) -> None:
    """Set exactly `xattrs` on `target`: also remove any it has that `xattrs` lacks.

    A new entry can start with xattrs it did not ask for (an ACL inherited
    from a default ACL); removing them keeps the copy exact.
    """
    if dir_fd is not None:
        os.fchdir(dir_fd)
    follow = not isinstance(target, bytes)
    wanted = dict(xattrs)
    try:
        present = os.listxattr(target, follow_symlinks=follow)
    except OSError as e:
        if e.errno not in _UNSUPPORTED:
            raise
        present = []
    for name in present:
        if os.fsencode(name) not in wanted:
            os.removexattr(target, name, follow_symlinks=follow)
    for key, value in xattrs:
        os.setxattr(target, key, value, follow_symlinks=follow)
