"""Finding project names by prefix and by substring, fast on an index of 500,000 names.

One ``NameIndex`` per commit, built once from the sorted names (``MirrorView.projects``): a prefix
is two bisections; a substring is ``str.find`` over all names joined by newlines (a scan in C, not
a loop in Python), each hit mapped back to its name by bisecting the names' offsets.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from itertools import accumulate

_SEPARATORS = re.compile(r"[-_.]+")
_NAME_TEXT = re.compile(r"[a-z0-9-]*")  # what a normalized name is made of (fullmatch)


def search_key(text: str) -> str | None:
    """A query as normalized names spell it (``Foo_Bar`` -> ``foo-bar``), or None when no name can contain it."""
    key = _SEPARATORS.sub("-", text.strip().lower())
    return key if key and _NAME_TEXT.fullmatch(key) else None


class NameIndex:
    def __init__(self, names: list[str]) -> None:
        """``names``: sorted, normalized (no newline in any)."""
        self.names = names
        self.text = "\n".join(names) + "\n"
        self.starts = list(accumulate((len(name) + 1 for name in names[:-1]), initial=0)) if names else []

    def __len__(self) -> int:
        return len(self.names)

    def prefixed(self, prefix: str, limit: int) -> tuple[list[str], int]:
        """(up to ``limit`` names starting with ``prefix``, in order; how many there are)."""
        low = bisect_left(self.names, prefix)
        high = bisect_right(self.names, prefix + "\x7f", low)
        return self.names[low : min(high, low + limit)], high - low

    def containing(self, part: str) -> Iterator[str]:
        """The names containing ``part``, in order."""
        text, starts, names, at = self.text, self.starts, self.names, 0
        while (hit := text.find(part, at)) >= 0:
            index = bisect_right(starts, hit) - 1
            yield names[index]
            at = starts[index] + len(names[index]) + 1  # on to the next name

    def search(self, key: str, limit: int = 100) -> tuple[list[str], bool]:
        """(up to ``limit`` names: those starting with ``key``, then the others containing it; whether
        there are more)."""
        found, total = self.prefixed(key, limit)
        if total > limit:
            return found, True
        for name in self.containing(key):
            if name.startswith(key):
                continue
            if len(found) == limit:
                return found, True
            found.append(name)
        return found, False

    def after(self, name: str, limit: int = 100) -> tuple[list[str], bool]:
        """(up to ``limit`` names sorting after ``name``, in order; whether there are more): browsing A-Z."""
        low = bisect_right(self.names, name)
        return self.names[low : low + limit], low + limit < len(self.names)
