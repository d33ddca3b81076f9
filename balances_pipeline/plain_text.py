"""Plain text: what staff input and source identifiers may not contain.

Controls (C0, DEL, C1 such as U+009B CSI), format characters (bidirectional overrides such
as U+202E, zero-width characters), surrogates, and line and paragraph separators (U+2028,
U+2029) can hide or reorder what a person reads in a terminal, a CSV or the UI.
"""

from __future__ import annotations

import unicodedata

FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def forbidden_character(text: str) -> str | None:
    """The first control or formatting character of `text` as "U+XXXX", else None."""
    for ch in text:
        if unicodedata.category(ch) in FORBIDDEN_CATEGORIES:
            return f"U+{ord(ch):04X}"
    return None
