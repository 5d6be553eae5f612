"""How values appear in messages: as a person reads them, never as Python writes them."""

from __future__ import annotations

# Control characters (C0, DEL, C1) would move the cursor or recolour the terminal:
# each is shown as an escape instead.
_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))}
_CONTROL.update({ord("\n"): "\\n", ord("\t"): "\\t", ord("\r"): "\\r"})


def quoted(value: object) -> str:
    """`value` for a message: a text in single quotes ('pgdata'), as git and docker quote
    names, with control characters escaped; bytes decoded (what does not decode escaped);
    numbers as they are; nothing at all as "(none)"; a list as its items, each quoted,
    separated by commas. Never Python's own spelling (None, b'...', [...], True)."""
    if value is None:
        return "(none)"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, (list, tuple, set, frozenset)):
        return ", ".join(quoted(v) for v in value) or "(none)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).translate(_CONTROL) + "'"
