"""The agent: copies and hashes trees where the data lives, and reports only results.

voltool runs this package inside a helper container that mounts the volumes
involved, as `python3 -I -m <package> COMMAND ...` with the package's parent
directory on sys.path. It uses the standard library only and imports nothing
from outside this package (all imports are relative), so the directory can be
copied alone into an image. It never follows a symlink, treats every name as
bytes, and expects the source to change while it reads (see walk.py).

Commands
    --version, selftest
        The protocol's version; a JSON line saying which interpreter runs the
        agent and whether its SHA-256 is OpenSSL's (the agent image's check).
    scan ROOT
        Write the manifest of the tree at ROOT to stdout.
    copy SRC DST [--prev TREE MANIFEST --prev-started NS [--prev-by-content]]
         [--no-sync] [--private-root] [--gzip]
        Copy the tree at SRC into DST (made 0o700, or an existing empty
        directory), and write the manifest of what was copied to stdout
        (gzip-compressed with --gzip). With
        --prev, files unchanged since the copy that made TREE and MANIFEST
        (which started at NS, its summary's started_ns) are hard-linked from
        TREE instead (see copy.py); with --prev-by-content, files whose size,
        mtime, mode, owner, xattrs and content (hashed) are the previous
        manifest's, whatever their inode (a source no one writes to). TREE must
        be on DST's filesystem. Unless
        --no-sync, SRC's filesystem is flushed first (see main._syncfs).
        DST's root gets SRC's mode last: until then it is 0o700 (with
        --private-root it stays so, and gets none of SRC's root metadata: a
        restore's staging directory).
    verify TREE MANIFEST
        Hash TREE again and compare it with MANIFEST ("-": stdin); write the
        differences to stdout (see verify.py).

    A manifest read (MANIFEST, the previous one) may be plain or gzip-compressed.

Streams
    stdout: for scan and copy, the manifest: one JSON line per entry (format in
        entry.py), in ascending `names.order_key` of the paths (depth-first,
        children sorted by name bytes). For verify, the mismatch lines.
    stderr: JSON lines only (report.py): "error" and "warning" lines as they
        happen, then one "summary" line with the counts (report.Counts), the
        tree digest (digest.py) and started_ns (when the run started, in ns);
        verify's summary also has manifest_digest. A run that stops early ends
        with a "fatal" line instead of a summary.

Exit codes (report.py)
    0  done, every entry in the result
    1  done, but some entries were left out (each has an "error" line), or
       verify found differences
    2  usage: bad arguments, nothing done
    3  fatal: stopped early, the result must not be used

Memory is bounded whatever the number of entries: everything is streamed; the
only things held are one sorted name list and one fd per directory on the
current path, the previous manifest's next line, and the map of hard-link
groups not yet complete (links.py).
"""

__version__ = "1"  # the protocol above; bump when it changes
