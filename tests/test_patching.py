"""Installing and removing the hooks' wrappers (tracer.hooks.patching), on classes of our own."""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import wrapt

from tracer.hooks.patching import Applied, Patch, apply, is_wrapped, method_form, restore

pytestmark = pytest.mark.fast  # pure: no server, no subprocess


class Protocol:
    def data_received(self, data: bytes, *, more: bool = False) -> tuple[Any, ...]:
        """The original's docstring."""
        return (self, data, more)

    @staticmethod
    def parse(data: bytes) -> bytes:
        return data.upper()


class Child(Protocol):
    pass


def _module() -> types.ModuleType:
    module = types.ModuleType("wstrace_patching_probe")
    module.Protocol = Protocol  # type: ignore[attr-defined]
    module.Child = Child  # type: ignore[attr-defined]
    module.parse = Protocol.parse  # type: ignore[attr-defined]
    return module


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = _module()
    monkeypatch.setitem(sys.modules, module.__name__, module)
    return module


def test_a_method_hook_hands_the_wrapper_what_wrapt_would(probe: types.ModuleType) -> None:
    seen: list[tuple[Any, ...]] = []

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        seen.append((wrapped.__func__, wrapped.__self__, instance, args, kwargs))
        return wrapped(*args, **kwargs)

    original = Protocol.__dict__["data_received"]
    applied: list[Applied] = []
    missing = apply([Patch(probe.__name__, "Protocol.data_received", wrapper)], applied)
    try:
        assert missing == []
        hooked = Protocol.__dict__["data_received"]
        assert type(hooked) is types.FunctionType  # a plain function, not wrapt's proxy
        assert is_wrapped(hooked) and not is_wrapped(original)
        assert hooked.__wrapped__ is original
        assert (hooked.__name__, hooked.__doc__) == ("data_received", original.__doc__)
        protocol = Protocol()
        assert protocol.data_received(b"x", more=True) == (protocol, b"x", True)
        assert Protocol.data_received(protocol, b"y") == (protocol, b"y", False)
        assert seen == [
            (original, protocol, protocol, (b"x",), {"more": True}),
            (original, protocol, protocol, (b"y",), {}),
        ]
        # Already wrapped: applying again changes nothing.
        assert apply([Patch(probe.__name__, "Protocol.data_received", wrapper)], applied) == []
        assert len(applied) == 1
    finally:
        restore(applied)
    assert Protocol.__dict__["data_received"] is original


def test_an_inherited_method_is_hooked_on_the_subclass_and_removed_again(
    probe: types.ModuleType,
) -> None:
    calls: list[Any] = []

    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        calls.append(type(instance))
        return wrapped(*args, **kwargs)

    applied: list[Applied] = []
    apply([Patch(probe.__name__, "Child.data_received", wrapper)], applied)
    try:
        assert Child().data_received(b"z")[1:] == (b"z", False)
        assert Protocol().data_received(b"z")[1:] == (b"z", False)  # the parent is untouched
        assert calls == [Child]
    finally:
        restore(applied)
    assert "data_received" not in Child.__dict__


def test_anything_but_a_plain_method_is_wrapped_with_wrapt(probe: types.ModuleType) -> None:
    def wrapper(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        return b"<" + wrapped(*args, **kwargs) + b">"

    applied: list[Applied] = []
    apply([Patch(probe.__name__, "parse", wrapper)], applied)
    try:
        assert isinstance(probe.parse, wrapt.FunctionWrapper) and is_wrapped(probe.parse)
        assert probe.parse(b"a") == b"<A>"
    finally:
        restore(applied)
    assert probe.parse is Protocol.parse


def test_a_method_form_hook_is_the_method_itself(probe: types.ModuleType) -> None:
    """A :func:`method_form` hook makes the method from the original: called with the
    instance and the arguments directly (no bound method, no second call), it keeps the
    original's name, docstring and ``__wrapped__``, and goes the way the others go."""
    made: list[Any] = []

    @method_form
    def make(original: Any) -> Any:
        made.append(original)

        def data_received(self: Any, *args: Any, **kwargs: Any) -> Any:
            return ("hooked", original(self, *args, **kwargs))

        return data_received

    original = Protocol.__dict__["data_received"]
    applied: list[Applied] = []
    missing = apply([Patch(probe.__name__, "Protocol.data_received", make),
                     Patch(probe.__name__, "parse", make)], applied)  # fmt: skip
    try:
        assert missing == [f"{probe.__name__}:parse"]  # a module's function: not a method
        hooked = Protocol.__dict__["data_received"]
        assert made == [original] and is_wrapped(hooked)
        assert hooked.__wrapped__ is original and hooked.__name__ == "data_received"
        assert hooked.__doc__ == "The original's docstring."
        protocol = Protocol()
        assert protocol.data_received(b"x", more=True) == ("hooked", (protocol, b"x", True))
        assert probe.parse(b"a") == b"A"  # left alone
    finally:
        restore(applied)
    assert Protocol.__dict__["data_received"] is original
