"""A minimal room app written like the classic FastAPI chat/auction walkthroughs: a
``ConnectionManager`` with ``connect`` / ``disconnect`` / ``broadcast``, and a
``websocket_endpoint`` that broadcasts every JSON message to the room."""

from __future__ import annotations

import json

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


class ConnectionManager:
    """The room of the classic FastAPI chat/auction examples: connect, disconnect, broadcast."""

    def __init__(self) -> None:
        self.active_connections: list[WebSocket] = []

    async def connect(self, websocket: WebSocket) -> None:
        await websocket.accept()
        self.active_connections.append(websocket)
        await websocket.send_text("joined")  # tells the client it is in the room

    def disconnect(self, websocket: WebSocket) -> None:
        self.active_connections.remove(websocket)

    async def broadcast(self, data: dict, auction_id: str) -> None:
        for connection in list(self.active_connections):
            await connection.send_json({"auction": auction_id, **data})


def room_app() -> FastAPI:
    """``/ws/auction/{auctionID}``: every JSON message is broadcast to the whole room."""
    app = FastAPI()
    manager = ConnectionManager()

    @app.websocket("/ws/auction/{auctionID}")
    async def websocket_endpoint(websocket: WebSocket, auctionID: str) -> None:
        await manager.connect(websocket)
        try:
            while True:
                data = await websocket.receive_text()
                data = json.loads(data)
                await manager.broadcast(data, auctionID)
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    return app
