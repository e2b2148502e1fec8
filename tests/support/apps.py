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
