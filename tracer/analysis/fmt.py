"""Small formatters shared by the tree, the stats table and the Perfetto export."""

from __future__ import annotations

import math
import os
from pathlib import PurePath
from typing import Any

from tracer import vocab

_PACKAGE_DIRS = ("site-packages/", "dist-packages/")


def duration(ns: int | float) -> str:
    """Human duration with a unit that keeps 3-4 significant digits."""
    ns = float(ns)
    if not math.isfinite(ns):
        return "?"
    if abs(ns) < 1_000:
        return f"{ns:.0f} ns"
    if abs(ns) < 1_000_000:
        return f"{ns / 1e3:.1f} µs"
    if abs(ns) < 1_000_000_000:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e9:.3f} s"


def ms(ns: int | float | None) -> str:
    """Milliseconds with 3 decimals (microsecond resolution), as the stats table shows them."""
    return "-" if ns is None else f"{ns / 1e6:.3f}"


def short_path(path: str, cwd: str | None = None) -> str:
    """``uvicorn/protocols/http/h11_impl.py`` for installed code, relative for the project's."""
    for marker in _PACKAGE_DIRS:
        index = path.rfind(marker)
        if index >= 0:
            return path[index + len(marker) :]
    cwd = cwd if cwd is not None else os.getcwd()
    try:
        return str(PurePath(path).relative_to(cwd))
    except ValueError:
        return path


def code_location(attrs: dict[str, Any]) -> str | None:
    """``file:line`` of the implementation function a stage span recorded, if any."""
    file = attrs.get(vocab.CODE_FILE_PATH)
    if not isinstance(file, str) or not file:
        return None
    line = attrs.get(vocab.CODE_LINE_NUMBER)
    return f"{short_path(file)}:{line}" if line is not None else short_path(file)


def frame_summary(attrs: dict[str, Any]) -> str:
    """Frame header fields the way a capture reads: ``FIN=1 text MASK=1 len=24``."""
    parts = []
    if vocab.WS_FIN in attrs:
        parts.append(f"FIN={int(bool(attrs[vocab.WS_FIN]))}")
    rsv = attrs.get(vocab.WS_RSV)
    if rsv:
        parts.append(f"RSV={rsv}")
    name = attrs.get(vocab.WS_OPCODE_NAME)
    opcode = attrs.get(vocab.WS_OPCODE)
    if name is not None:
        parts.append(str(name))
    elif opcode is not None:
        parts.append(f"opcode={opcode}")
    if vocab.WS_MASK in attrs:
        parts.append(f"MASK={int(bool(attrs[vocab.WS_MASK]))}")
    if vocab.WS_PAYLOAD_LENGTH in attrs:
        parts.append(f"len={attrs[vocab.WS_PAYLOAD_LENGTH]}")
    return " ".join(parts)


def is_frame(name: str) -> bool:
    return name in (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND)
