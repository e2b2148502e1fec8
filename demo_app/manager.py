"""Who is in which auction room, and fan-out to a room (the seed's ``ConnectionManager``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from starlette.websockets import WebSocket

import tracer
from demo_app.protocol import dumps

log = logging.getLogger(__name__)


class ConnectionManager:
    """Rooms of open WebSockets, one room per auction id.

    Each room has a lock (:meth:`lock_for`) that orders everything reaching it: a caller holds
    it while it records a bid or a chat line and broadcasts it, and :meth:`connect` holds it
    while it sends the joiner the room's state. So every member sees the room's messages in the
    same order (the order they were accepted in), a joiner sees each bid exactly once (in its
    state, or broadcast after), and a slow reader in one room never delays another room.
    """

    def __init__(self) -> None:
        self.rooms: dict[str, list[WebSocket]] = {}
        self._room_of: dict[WebSocket, str] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def lock_for(self, auction_id: str) -> asyncio.Lock:
        """The lock that orders what reaches one room."""
        return self._locks.setdefault(auction_id, asyncio.Lock())

    async def connect(
        self, websocket: WebSocket, auction_id: str, greeting: Callable[[], dict[str, Any]]
    ) -> None:
        """Accept the handshake, send the joiner ``greeting()`` and add it to the room."""
        await websocket.accept()
        async with self.lock_for(auction_id):
            self.rooms.setdefault(auction_id, []).append(websocket)
            self._room_of[websocket] = auction_id
            await self._send(websocket, dumps(greeting()))

    def disconnect(self, websocket: WebSocket) -> None:
        """Forget the connection; harmless if it was already forgotten."""
        auction_id = self._room_of.pop(websocket, None)
        if auction_id is None:
            return
        room = [connection for connection in self.rooms[auction_id] if connection is not websocket]
        if room:
            self.rooms[auction_id] = room
        else:
            del self.rooms[auction_id]

    async def broadcast(self, message: dict[str, Any], auction_id: str) -> None:
        """Send ``message`` to everyone in the room, the sender included, serialised once."""
        text = dumps(message)
        with tracer.broadcast():  # one ws.broadcast span, one ws.message.send per recipient
            for connection in list(self.rooms.get(auction_id, ())):
                await self._send(connection, text)

    async def _send(self, connection: WebSocket, text: str) -> None:
        """Send to one member; a member that cannot be reached leaves the room instead."""
        try:
            await connection.send_text(text)
        except Exception as exc:  # any failure is that recipient's alone: keep fanning out
            log.debug("dropping unreachable connection from its room: %r", exc)
            self.disconnect(connection)
