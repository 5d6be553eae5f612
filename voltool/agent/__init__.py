"""voltool's agent: a standard-library program run inside a started helper.

This is a placeholder that answers `--version` and `selftest`; the real agent
replaces this package. It must keep to the standard library and to relative
imports: it is copied into the agent image as a package of its own.
"""

__version__ = "0"
