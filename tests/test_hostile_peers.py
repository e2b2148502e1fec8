"""Hostile peers on one traced server: 200 connections holding a partial request line open,
200 sending garbage after the upgrade, 50 dribbling a 1 MiB frame a few bytes at a time.
The tracer's memory per connection stays within its bound, every span ends, and the
well-behaved connections served meanwhile are traced whole."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

import tracer
from bench.burst import raise_file_limit
from tests.support import raw
from tests.support.apps import echo_app
from tests.support.server import run_server
from tests.support.tracing import Tree, traced, wait_until
from tracer import vocab

PARTIAL = 200
GARBAGE = 200
DRIBBLERS = 50
FRAME = 1024 * 1024
DRIBBLE_ROUNDS = 60
DRIBBLE_BYTES = 5
WELL_BEHAVED = 5
TRACER_BYTES_PER_HOSTILE_CONNECTION = 16 * 1024
"""The bound the README states for what the tracer holds for a connection, whatever it sends."""
TRACER_DIR = str(Path(tracer.__file__).parent)


def tracer_bytes() -> int:
    """Bytes allocated from wstrace's own code and still alive."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, TRACER_DIR + "/*")]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


async def well_behaved(url: str) -> None:
    async with connect(url + "/echo") as client:
        for n in range(3):
            await client.send(f"fine {n}")
            assert await client.recv() == f"fine {n}"


async def well_behaved_together(url: str) -> None:
    await asyncio.wait_for(asyncio.gather(*(well_behaved(url) for _ in range(WELL_BEHAVED))), 60)


def partial_request_line(port: int) -> socket.socket:
    sock = raw.open_socket(port)
    sock.sendall(b"GET /echo HT")
    return sock


def garbage_after_upgrade(port: int) -> socket.socket:
    sock, rest = raw.handshake(port, "/echo")
    sock.sendall(bytes(range(256)) * 4)  # reserved opcodes, unmasked, absurd lengths
    raw.read_frames_until_close(sock, rest)  # the server gives up on it (1002 or so)
    return sock


def start_dribble(port: int) -> tuple[socket.socket, bytes]:
    sock, _ = raw.handshake(port, "/echo")
    frame = raw.client_frame(0x2, bytes(FRAME))
    return sock, frame


@pytest.mark.timeout(300)
def test_hostile_peers_do_not_hurt_the_tracer_or_the_other_connections() -> None:
    raise_file_limit(4 * (PARTIAL + GARBAGE + DRIBBLERS) + 256)
    held: list[socket.socket] = []
    # uvicorn's keepalive pings are off: a peer that never reads would miss its pong and be
    # closed 40 s in, which a slow run (tracemalloc, a busy machine) reaches mid-dribble.
    with traced() as t, run_server(
        echo_app(), http="h11", ws="websockets-sansio", ws_ping_interval=None
    ) as server:
        asyncio.run(well_behaved(server.ws_url))  # warm: caches filled once for all
        tracemalloc.start()
        try:
            before = tracer_bytes()
            held += [partial_request_line(server.port) for _ in range(PARTIAL)]
            held += [garbage_after_upgrade(server.port) for _ in range(GARBAGE)]
            dribbles = [start_dribble(server.port) for _ in range(DRIBBLERS)]
            held += [sock for sock, _ in dribbles]
            for round_ in range(DRIBBLE_ROUNDS):
                start = round_ * DRIBBLE_BYTES
                for sock, frame in dribbles:
                    sock.sendall(frame[start : start + DRIBBLE_BYTES])
            asyncio.run(well_behaved_together(server.ws_url))
            during = tracer_bytes()
        finally:
            tracemalloc.stop()
        for sock in held:
            sock.close()
        wanted = 1 + GARBAGE + DRIBBLERS + WELL_BEHAVED
        wait_until(lambda: len(t.named(vocab.CONNECTION)) == wanted, timeout=60)
        wait_until(lambda: not t.tracker.open, timeout=60)

    hostile = PARTIAL + GARBAGE + DRIBBLERS
    per_connection = (during - before) / hostile
    print(f"tracer memory per hostile connection: {per_connection:.0f} bytes")
    assert per_connection <= TRACER_BYTES_PER_HOSTILE_CONNECTION
    tree = Tree(t.spans)
    closes = {conn.context.span_id: tree.kids(conn, vocab.WS_CLOSE) for conn in tree.connections()}
    whole = [
        conn
        for conn in tree.connections()
        if len(closes[conn.context.span_id]) == 1
        and closes[conn.context.span_id][0].attributes[vocab.WS_CLOSE_CODE] == 1000
    ]
    assert len(whole) == 1 + WELL_BEHAVED
    for conn in whole:
        messages = [s for s in tree.descendants(conn) if s.name == vocab.WS_MESSAGE_RECEIVE]
        frames_in = [s for s in tree.descendants(conn) if s.name == vocab.WS_FRAME_RECEIVE]
        assert len(messages) == 3 and len(frames_in) == 4
    hostile_conns = [conn for conn in tree.connections() if conn not in whole]
    assert len(hostile_conns) == GARBAGE + DRIBBLERS
    for conn in hostile_conns:  # each recorded as what it was: bad bytes, a frame cut short
        assert len(closes[conn.context.span_id]) == 1
        assert any(e.name == vocab.EVENT_PROTOCOL_ERROR for e in conn.events)
    assert not t.tracker.open
