"""Every span wstrace starts ends, even when the server never calls ``connection_lost``:
a protocol object dropped with its transport (as uvicorn's own protocol tests do), or
``uninstrument()`` while connections are open.  Each says why it was ended."""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from opentelemetry.trace import StatusCode
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from tests.support.tracing import traced
from tracer import vocab
from tracer.recorder import abandoned

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: example.org\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
)


class HarnessTransport(asyncio.Transport):
    """A transport a test harness holds: it takes writes and never reports the connection
    lost (no ``connection_lost`` ever reaches the protocol)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.protocol: Any = None

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(
            name, default
        )

    def write(self, data: Any) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def pause_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: Any = None, low: Any = None) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def resume_reading(self) -> None:
        pass


async def accept_app(scope: Any, receive: Any, send: Any) -> None:
    """Accepts, then waits for a message that never comes."""
    await receive()
    await send({"type": "websocket.accept"})
    await receive()


async def _upgrade_on_harness(ws: str) -> tuple[HarnessTransport, ServerState]:
    """uvicorn's h11 protocol upgraded to ``ws`` on a harness transport, the 101 written."""
    config = Config(app=accept_app, http="h11", ws=ws, lifespan="off", log_level="critical")
    config.load()
    state = ServerState()
    transport = HarnessTransport()
    protocol = H11Protocol(
        config=config, server_state=state, app_state={}, _loop=asyncio.get_running_loop()
    )
    protocol.connection_made(transport)
    protocol.data_received(UPGRADE)
    for _ in range(200):  # bounded: until the 101 is on the wire
        if b"101" in transport.written:
            break
        await asyncio.sleep(0.01)
    assert b"101 Switching Protocols" in transport.written
    return transport, state


async def _upgrade_and_drop(ws: str) -> None:
    """An upgrade on a harness transport; then the harness forgets everything."""
    _, state = await _upgrade_on_harness(ws)
    for task in state.tasks:
        task.cancel()  # the harness's loop stops running the app: no connection_lost comes
    await asyncio.gather(*state.tasks, return_exceptions=True)
    state.connections.clear()


@pytest.mark.parametrize("ws", ["websockets-sansio", "wsproto"])
def test_a_protocol_dropped_without_connection_lost_still_ends_its_spans(ws: str) -> None:
    with traced() as t:
        asyncio.run(_upgrade_and_drop(ws))
        gc.collect()
        assert abandoned.pending(), "the collected record queued its open spans"
        assert abandoned.end_abandoned() >= 1
        assert not t.tracker.open, f"spans never ended: {t.tracker.open}"
        (connection,) = t.named(vocab.CONNECTION)
        assert connection.attributes[vocab.END_REASON] == vocab.END_COLLECTED
        assert connection.status.status_code is StatusCode.ERROR
        assert "connection_lost" in (connection.status.description or "")


def test_uninstrument_ends_open_connections_and_says_why() -> None:
    with traced() as t:
        kept = asyncio.run(_upgrade_on_harness("wsproto"))  # kept: the connection stays open
        assert t.tracker.open  # ws.connection and asgi.app are open
    assert not t.tracker.open  # uninstrument() ended them
    (connection,) = t.named(vocab.CONNECTION)
    assert connection.attributes[vocab.END_REASON] == vocab.END_UNINSTRUMENTED
    assert connection.status.status_code is StatusCode.ERROR
    del kept
