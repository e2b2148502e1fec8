"""``WebSocketInstrumentor``: installs the server hooks, the OpenTelemetry-contrib way.

Registered under the ``opentelemetry_instrumentor`` entry point, so ``opentelemetry-instrument
uvicorn app:app`` loads it; ``tracer.instrument()`` is the short way in code.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

from opentelemetry.instrumentation.instrumentor import BaseInstrumentor

from tracer.asgi import enter_server_chain, leave_server_chain, unwrap_chain
from tracer.config import TracerConfig
from tracer.hooks import http as http_hooks
from tracer.hooks import ws as ws_hooks
from tracer.hooks.context import Active, ChainEntry
from tracer.hooks.patching import Applied, apply, import_quietly, restore
from tracer.recorder import Recorder

logger = logging.getLogger("wstrace")

_instruments = ("uvicorn >= 0.40",)


class WebSocketInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Traces every stage of uvicorn's WebSocket connections.

    Options (keyword arguments of :meth:`instrument`): ``tracer_provider`` and every field of
    :class:`tracer.config.TracerConfig` (``shape``, ``frames``, ``capture_payload`` …).
    """

    _applied: list[Applied]
    missing: list[str]

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    def _instrument(self, **kwargs: Any) -> None:
        provider = kwargs.pop("tracer_provider", None)
        kwargs.pop("skip_dep_check", None)
        config = TracerConfig.build(**kwargs)
        Active.recorder = Recorder(provider, config)
        Active.chain = ChainEntry(enter_server_chain, leave_server_chain)
        self._applied = []
        self.missing = []
        for impl, (module, _cls) in http_hooks.IMPLEMENTATIONS.items():
            if import_quietly(module) is None:
                continue  # not installed (zttp): nothing to hook
            self._report(impl, apply(http_hooks.patches(impl), self._applied))
        for name, family in ws_hooks.FAMILIES.items():
            if import_quietly(family.module) is None:
                continue
            self._report(name, apply(ws_hooks.patches(name), self._applied))

    def _report(self, impl: str, missing: list[str]) -> None:
        if missing:
            self.missing += missing
            logger.warning(
                "wstrace: %s: hook targets not found, those stages will be missing: %s",
                impl,
                ", ".join(missing),
            )

    def _uninstrument(self, **kwargs: Any) -> None:
        restore(self._applied)
        unwrap_chain()  # the ASGI chain wrappers TracingMiddleware installed, too
        recorder, Active.recorder = Active.recorder, None
        Active.chain = None
        if recorder is not None:
            recorder.flush_open()

    @property
    def recorder(self) -> Recorder | None:
        return Active.recorder
