"""How the library tells its caller what is happening, without printing anything itself."""

from __future__ import annotations


class Reporter:
    """Callbacks an operation calls as it goes; this base class ignores them all.

    The CLI subclasses it to render progress bars and warnings; tests can
    subclass it to record what was said.
    """

    def note(self, message: str) -> None:
        """Something worth a line: an image being built, a container paused."""

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop the operation."""

    def begin(self, label: str, total: int | None) -> None:
        """A transfer starts; `total` bytes when known."""

    def advance(self, nbytes: int) -> None:
        """`nbytes` more bytes of the current transfer went through."""

    def end(self) -> None:
        """The current transfer is over (finished or not)."""

    def status(self, message: str | None) -> None:
        """What is being done now that has no byte count ("reading the manifest");
        None: that is over. A transfer that begins replaces it."""
