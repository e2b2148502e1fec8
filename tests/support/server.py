"""Run a real uvicorn server on a free loopback port, in a background thread.

A thread (not a subprocess) so that tests can read the spans the server recorded from an
in-memory exporter in the same process.  The server is a real ``uvicorn.Server`` listening on a
real socket; clients talk to it over TCP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


# zttp is uvicorn's newest HTTP parser (a Zig core); traced whenever it is installed.
HTTP_IMPLS = ("httptools", "h11", *(("zttp",) if _importable("zttp") else ()))
WS_IMPLS = ("websockets", "websockets-sansio", "wsproto")
IMPL_PAIRS = [(http, ws) for http in HTTP_IMPLS for ws in WS_IMPLS]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningServer:
    server: uvicorn.Server
    host: str
    port: int
    thread: threading.Thread

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"


@contextlib.contextmanager
def run_server(
    app: Any, *, http: Any = "h11", ws: Any = "websockets-sansio", **config: Any
) -> Iterator[RunningServer]:
    """Serve ``app`` until the ``with`` block ends; yields where to reach it."""
    config.setdefault("log_level", "warning")
    config.setdefault("lifespan", "off")
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, http=http, ws=ws, **config)
    )

    def serve() -> None:
        asyncio.run(server.serve())

    thread = threading.Thread(target=serve, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("uvicorn exited before it started")
        if time.monotonic() > deadline:
            raise TimeoutError("uvicorn did not start within 15 s")
        time.sleep(0.01)
    try:
        yield RunningServer(server, "127.0.0.1", port, thread)
    finally:
        server.should_exit = True
        thread.join(timeout=15)
