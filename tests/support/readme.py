"""Code blocks of the README that are meant to be run, found by their first line."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

_BLOCK = re.compile(r"^```python\n# (?P<name>[\w.]+\.py)\n(?P<body>.*?)^```$", re.M | re.S)


def python_files(path: Path = README) -> dict[str, str]:
    """``{"app.py": source, ...}`` for every ```python block whose first line is ``# NAME.py``."""
    text = path.read_text(encoding="utf-8")
    return {m["name"]: m["body"] for m in _BLOCK.finditer(text)}
