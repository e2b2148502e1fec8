"""Run a real uvicorn server on a free loopback port, in a background thread.

A thread (not a subprocess) so that tests can read the spans the server recorded from an
in-memory exporter in the same process.  The server is a real ``uvicorn.Server`` listening on a
real socket; clients talk to it over TCP.  It is the same runner ``wstrace demo`` uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from tracer.demo import Running, free_port, serving
from tracer.testing import available_impls

# Every pair uvicorn can run here: zttp, uvicorn's newest HTTP parser (a Zig core), is traced
# whenever it is installed.  One list for the project's tests and the plugin users' tests.
_PAIRS = available_impls()
HTTP_IMPLS = tuple(dict.fromkeys(pair.http for pair in _PAIRS))
WS_IMPLS = tuple(dict.fromkeys(pair.ws for pair in _PAIRS))
IMPL_PAIRS = [(http, ws) for http in HTTP_IMPLS for ws in WS_IMPLS]

RunningServer = Running

__all__ = ["HTTP_IMPLS", "IMPL_PAIRS", "WS_IMPLS", "RunningServer", "free_port", "run_server"]


@contextlib.contextmanager
def run_server(
    app: Any, *, http: Any = "h11", ws: Any = "websockets-sansio", **config: Any
) -> Iterator[Running]:
    """Serve ``app`` until the ``with`` block ends; yields where to reach it."""
    config.setdefault("lifespan", "off")
    with serving(app, host="127.0.0.1", port=free_port(), http=http, ws=ws, **config) as running:
        yield running
