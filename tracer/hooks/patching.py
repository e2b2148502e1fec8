"""Installing and removing wrappers, the OpenTelemetry-contrib way (``wrapt``).

Each hook module describes its targets as :class:`Patch` entries.  A missing target (an
internal name that moved in another version of uvicorn or a WebSocket library) degrades that
one stage with a single warning; everything else keeps working.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import wrapt

logger = logging.getLogger("wstrace")


@dataclass(frozen=True, slots=True)
class Patch:
    module: str
    qualname: str  # "Class.method" or "function"
    wrapper: Callable[..., Any]


@dataclass(slots=True)
class Applied:
    owner: Any
    attribute: str
    original: Any
    own: bool  # defined on the owner itself (not inherited): restore by assignment


def import_quietly(module: str) -> Any | None:
    """Import a module that may be absent or may warn on import (uvicorn's legacy websockets)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except Exception:
        return None


def resolve(module: str, qualname: str) -> tuple[Any, str, Any, bool] | None:
    owner = import_quietly(module)
    if owner is None:
        return None
    *path, attribute = qualname.split(".")
    for part in path:
        owner = getattr(owner, part, None)
        if owner is None:
            return None
    own = attribute in getattr(owner, "__dict__", {})
    original = owner.__dict__[attribute] if own else getattr(owner, attribute, None)
    if original is None:
        return None
    return owner, attribute, original, own


def apply(patches: Iterable[Patch], applied: list[Applied]) -> list[str]:
    """Wrap every target that exists; returns the ones that could not be found."""
    missing: list[str] = []
    for patch in patches:
        found = resolve(patch.module, patch.qualname)
        if found is None:
            missing.append(f"{patch.module}:{patch.qualname}")
            continue
        owner, attribute, original, own = found
        if isinstance(original, wrapt.FunctionWrapper):
            continue  # already wrapped (by us, through another path)
        wrapt.wrap_function_wrapper(owner, attribute, patch.wrapper)
        applied.append(Applied(owner, attribute, original, own))
    return missing


def restore(applied: list[Applied]) -> None:
    """Put every original back, newest first, so that identity checks hold afterwards."""
    while applied:
        entry = applied.pop()
        if entry.own:
            setattr(entry.owner, entry.attribute, entry.original)
        else:
            delattr(entry.owner, entry.attribute)


def original_function(module: str, qualname: str) -> Any | None:
    """The unwrapped function at a target, for ``code.*`` attributes."""
    found = resolve(module, qualname)
    if found is None:
        return None
    function = found[2]
    return getattr(function, "__wrapped__", function)
