"""`python3 -I -m <package> --version | selftest`: what the agent image's check runs."""

from __future__ import annotations

import hashlib
import json
import sys

from . import __version__


def _selftest() -> dict[str, object]:
    h = hashlib.sha256()
    return {
        "agent": __version__,
        "python": sys.version,
        "prefix": sys.prefix,
        # OpenSSL's SHA-256 is `_hashlib.HASH`; the built-in fallback (`_sha256` or
        # `_sha2`) is several times slower.
        "sha256": f"{type(h).__module__}.{type(h).__name__}",
        "openssl": type(h).__module__ == "_hashlib",
    }


def main(argv: list[str]) -> int:
    if argv == ["--version"]:
        print(__version__)
        return 0
    if argv == ["selftest"]:
        print(json.dumps(_selftest(), sort_keys=True))
        return 0
    print("usage: agent --version | selftest", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
