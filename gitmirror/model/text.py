"""Strings from outside (upstream's reasons, a client's headers) written into lines of our own.

A commit message, a report or a log holds one change per line: a string that carries a line break
would write a line of its own there (posing as another change or a trailer), and an escape sequence
would drive the terminal of whoever reads ``git log``. ``printable`` shows such characters as
``\\xNN``/``\\uNNNN`` instead; the string itself is kept as given wherever it is data (manifests, pages).
"""

from __future__ import annotations


def printable(text: str, also: str = "") -> str:
    """``text`` with every character that is not printable (and each of ``also``) escaped."""
    if text.isprintable() and not any(char in text for char in also):
        return text
    return "".join(_escaped(char) if char in also or not char.isprintable() else char for char in text)


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02X}"
    return f"\\u{code:04X}" if code < 0x10000 else f"\\U{code:08X}"
