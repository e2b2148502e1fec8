"""Small real FastAPI apps the tracing tests serve with uvicorn."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, WebSocket, WebSocketDisconnect


def echo_app() -> FastAPI:
    """``/echo`` echoes every message; ``/reject`` refuses the handshake; ``/room`` fans out."""
    app = FastAPI()
    room: list[WebSocket] = []

    @app.get("/plain")
    async def plain() -> dict[str, bool]:
        return {"ok": True}

    @app.websocket("/echo")
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            if message.get("text") is not None:
                await websocket.send_text(message["text"])
            else:
                await websocket.send_bytes(message["bytes"])

    @app.websocket("/push")
    async def push(websocket: WebSocket, count: int = 10) -> None:
        """A push-only endpoint: it never receives, it only sends."""
        await websocket.accept()
        for n in range(count):
            await websocket.send_text(f"tick {n}")
        await websocket.close()

    @app.websocket("/slow")
    async def slow(websocket: WebSocket) -> None:
        """Echoes after a 200 ms 'handler': a message arriving meanwhile has to queue."""
        await websocket.accept()
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            await asyncio.sleep(0.2)
            await websocket.send_text(message["text"])

    @app.websocket("/reject")
    async def reject(websocket: WebSocket) -> None:
        await websocket.close(code=4403, reason="go away")

    @app.websocket("/room")
    async def fan_out(websocket: WebSocket) -> None:
        await websocket.accept()
        room.append(websocket)
        try:
            while True:
                text = await websocket.receive_text()
                for peer in list(room):
                    await peer.send_text(text)
        except WebSocketDisconnect:
            room.remove(websocket)

    return app


# --- A minimal room app written like the classic FastAPI walkthroughs ---------------------------


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
    import json

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
