"""Installing and removing wrappers, the OpenTelemetry-contrib way: each wrapper has wrapt's
signature, ``wrapper(wrapped, instance, args, kwargs)``.

Each hook module describes its targets as :class:`Patch` entries.  A missing target (an
internal name that moved in another version of uvicorn or a WebSocket library) degrades that
one stage with a single warning; everything else keeps working.

Most targets are plain methods of the server's protocol classes, called for every chunk a
client sends and every message: those are replaced by a plain function that binds the
original and calls the wrapper (:func:`method_hook`).  ``wrapt``'s ``FunctionWrapper`` builds
a bound wrapper object on every attribute access: measured here with a wrapper that only calls
the original, a call costs 1.9 µs through it, 0.7 µs through the plain function (0.1 µs
unwrapped), on three calls of every message and a dozen of every handshake.  The hooks on
those methods go further: each makes the method itself (:func:`method_form`), one Python call
where the plain function makes two.  Anything else (a function of a module, a static or class
method) is wrapped with ``wrapt``.
"""

from __future__ import annotations

import functools
import importlib
import logging
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FunctionType, MethodType
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
        if is_wrapped(original):
            continue  # already wrapped (by us, through another path)
        if isinstance(owner, type) and type(original) is FunctionType:
            setattr(owner, attribute, method_hook(original, patch.wrapper))
        elif getattr(patch.wrapper, _METHOD_FORM, False):
            missing.append(f"{patch.module}:{patch.qualname}")  # not a plain method
            continue
        else:
            wrapt.wrap_function_wrapper(owner, attribute, patch.wrapper)
        applied.append(Applied(owner, attribute, original, own))
    return missing


_HOOK_MARK = "__wstrace_hook__"


def method_hook(original: FunctionType, wrapper: Callable[..., Any]) -> Callable[..., Any]:
    """``original``, a plain function on a class, as a plain function that calls
    ``wrapper(original bound to the instance, instance, args, kwargs)`` (see the module's
    docstring for why not ``wrapt`` here), or, for a :func:`method_form` wrapper, the method
    it makes of ``original``.  It keeps the original's name and docstring, and the original
    as ``__wrapped__``."""
    if getattr(wrapper, _METHOD_FORM, False):
        hooked = functools.wraps(original)(wrapper(original))
    else:

        @functools.wraps(original)
        def hooked(self: Any, *args: Any, **kwargs: Any) -> Any:
            return wrapper(MethodType(original, self), self, args, kwargs)

    setattr(hooked, _HOOK_MARK, True)
    return hooked


_METHOD_FORM = "__wstrace_method_form__"


def method_form(factory: Callable[[FunctionType], Callable[..., Any]]) -> Any:
    """Mark ``factory``, which makes the hooked method itself from the class's original
    function (``factory(original)``), as a wrapper of its own kind: for the methods every
    message passes, the hook's code is the method — one Python call, not the two (and a
    bound method) of :func:`method_hook`'s.  Only for plain methods of a class."""
    setattr(factory, _METHOD_FORM, True)
    return factory


def is_wrapped(function: Any) -> bool:
    """Whether ``function`` is a wrapper installed by :func:`apply` (or any ``wrapt`` one)."""
    return isinstance(function, wrapt.FunctionWrapper) or _HOOK_MARK in getattr(
        function, "__dict__", ()
    )


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
