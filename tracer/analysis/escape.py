"""Make recorded strings safe to print.

Everything in a trace file is data from the network or from the traced process: a close
reason, a header, a URL path, even a file name can carry terminal escape sequences (``ESC [``),
carriage returns that overwrite a line, bells, C1 controls, or Unicode bidi overrides that make
text read differently from what it is.  Rich markup in such a string (``[bold]``, ``[link=…]``)
would also be interpreted.  Every string shown to a user goes through :func:`safe_markup`
(or :func:`neutralise` where no markup is parsed).
"""

from __future__ import annotations

import unicodedata
from typing import Any

from rich.markup import escape

_BIDI_AND_INVISIBLE = frozenset(
    [
        0x061C,  # Arabic letter mark
        0x200B,  # zero width space
        0x200E,  # LRM
        0x200F,  # RLM
        0x2028,  # line separator
        0x2029,  # paragraph separator
        0xFEFF,  # zero width no-break space / BOM
        *range(0x202A, 0x202F),  # LRE RLE PDF LRO RLO
        *range(0x2066, 0x206A),  # LRI RLI FSI PDI
    ]
)
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})


def _escape_char(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    return ord(ch) in _BIDI_AND_INVISIBLE or unicodedata.category(ch) in _UNSAFE_CATEGORIES


def neutralise(text: str) -> str:
    """Replace control, bidi and separator characters by visible ``\\x1b``-style escapes."""
    if text.isprintable():  # fast path: nothing unsafe can be in a printable string
        return text
    return "".join(_escape_char(ch) if _unsafe(ch) else ch for ch in text)


def safe_markup(value: Any) -> str:
    """Any recorded value as Rich markup that displays exactly that value, inertly."""
    if isinstance(value, bytes):
        value = value.hex()
    elif not isinstance(value, str):
        value = str(value)
    return escape(neutralise(value))
