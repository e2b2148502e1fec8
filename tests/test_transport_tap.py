"""The see-through transport (tracer.hooks.transport) over a real asyncio transport on a
socket pair: what the server writes reaches the peer and the recorder, and everything else
the server asks of its transport is the real one's answer."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from tracer.hooks.transport import TapTransport, unwrap_transport

pytestmark = pytest.mark.fast  # a socket pair in this process: no server, no subprocess


class _Written:
    """Stands in for the connection's record: the one call the tap makes to it."""

    def __init__(self) -> None:
        self.chunks: list[tuple[int, int, bytes]] = []

    def on_bytes_out(self, start: int, end: int, data: bytes) -> None:
        self.chunks.append((start, end, data))


async def _tapped() -> tuple[TapTransport, Any, socket.socket, _Written]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    transport, _ = await asyncio.get_running_loop().connect_accepted_socket(
        asyncio.Protocol, ours
    )
    written = _Written()
    return TapTransport(transport, written), transport, peer, written  # type: ignore[arg-type]


def test_writes_reach_the_peer_and_the_recorder() -> None:
    async def run() -> None:
        tap, transport, peer, written = await _tapped()
        tap.write(bytearray(b"HTTP/1.1 101 "))
        tap.writelines([b"Switching", b" Protocols\r\n"])
        loop = asyncio.get_running_loop()
        received = b""
        while len(received) < 34:
            received += await loop.sock_recv(peer, 64)
        assert received == b"HTTP/1.1 101 Switching Protocols\r\n"
        assert [data for _, _, data in written.chunks] == [
            b"HTTP/1.1 101 ", b"Switching Protocols\r\n"
        ]
        assert all(type(data) is bytes and start <= end for start, end, data in written.chunks)
        transport.close()
        peer.close()

    asyncio.run(run())


def test_what_the_server_asks_of_its_transport_is_the_real_ones_answer() -> None:
    async def run() -> None:
        tap, transport, peer, _ = await _tapped()
        assert unwrap_transport(tap) is transport and unwrap_transport(transport) is transport
        for name in ("peername", "sockname", "socket"):
            assert tap.get_extra_info(name) == transport.get_extra_info(name)
        assert tap.get_extra_info("no-such-thing", "default") == "default"
        assert tap.is_closing() is False
        tap.pause_reading()
        assert not transport.is_reading()
        tap.resume_reading()
        assert transport.is_reading()  # through __getattr__: the rest is delegated too
        tap.close()
        assert transport.is_closing() and tap.is_closing()
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(peer, 64), 5) == b""  # the peer sees EOF
        peer.close()

    asyncio.run(run())


@pytest.mark.parametrize("name", ["get_extra_info", "close", "is_closing", "pause_reading"])
def test_what_every_connection_calls_is_the_taps_own(name: str) -> None:
    """Called on every connection or message: a method of the tap's own, not a failed
    lookup that falls back to ``__getattr__`` (four times the cost)."""
    assert name in TapTransport.__dict__
