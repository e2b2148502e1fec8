"""Checks shared by the walkthrough tests.

A code location is verified by importing the named function and asking ``inspect`` where its
``def`` is, independently of how the walkthrough found it (from files, without importing).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from typing import Any

from tracer.analysis.explain.source import CodeRef


def _resolve(module: Any, qualname: str) -> Any:
    obj = module
    for part in qualname.split("."):
        obj = inspect.unwrap(getattr(obj, part))
    return obj


def def_lines(ref: CodeRef) -> tuple[str, int, int]:
    """(file, first line, last line) of the ``def`` of ``ref`` according to ``inspect``."""
    assert ref.module is not None, ref
    module = importlib.import_module(ref.module)
    outer, _, inner = ref.qualname.partition(".<locals>.")
    obj = _resolve(module, outer)
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    obj = inspect.unwrap(obj)
    lines, start = inspect.getsourcelines(obj)
    file = inspect.getsourcefile(obj)
    assert file is not None
    if not inner:
        return file, start, start + len(lines) - 1
    # A function defined inside ``outer``: its def must be inside outer's source, with its name.
    name = inner.split(".")[-1]
    pattern = re.compile(rf"^\s*(async\s+)?def\s+{re.escape(name)}\s*\(")
    for offset, text in enumerate(lines):
        if pattern.match(text) and start + offset == ref.def_line:
            indent = len(text) - len(text.lstrip())
            end = start + offset
            for later, body in enumerate(lines[offset + 1 :], start=offset + 1):
                if body.strip() and len(body) - len(body.lstrip()) <= indent:
                    break
                end = start + later
            return file, start + offset, end
    raise AssertionError(f"no def {name} at line {ref.def_line} inside {ref.module}.{outer}")


def assert_points_into_def(ref: CodeRef) -> None:
    """The shown file:line is inside the real ``def`` of the named function, in that file."""
    assert ref.found, f"{ref.function}: {ref.problem}"
    file, first, last = def_lines(ref)
    assert ref.file is not None and os.path.samefile(file, ref.file), (ref.function, file)
    assert ref.line is not None and first <= ref.line <= last, (ref.function, ref.line, first, last)
    def_text = open(file, encoding="utf-8").read().splitlines()[ref.def_line - 1]  # noqa: SIM115
    name = ref.qualname.split(".")[-1]
    assert re.match(rf"^\s*(async\s+)?def\s+{re.escape(name)}\b", def_text), def_text
    assert ref.path is not None and file.replace(os.sep, "/").endswith(ref.path), ref.path
