"""The shell programs helpers run, each in a file of its own (checked by shellcheck).

A helper runs one as `sh -c PROGRAM sh ARGS...`: its arguments are $1, $2, ...
"""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def program(name: str) -> str:
    """The text of `name`.sh, shipped inside the package."""
    return resources.files(__package__).joinpath(f"{name}.sh").read_text()
