"""The auction app: live rooms over WebSocket, a REST API, and the page at ``/``.

Routes:

- ``GET /`` — the page: the auctions, each with a **Set For Auction** button that opens its room.
- ``POST /auctions`` ``{"item", "starting_price", "duration_s", "min_increment"?}`` → 201.
- ``GET /auctions``, ``GET /auctions/{id}`` (with ``"bids"`` in acceptance order; 404 if unknown).
- ``WS /ws/auction/{auctionID}`` — the room; messages are described in :mod:`demo_app.protocol`.

Rules: the first bid must be at least the starting price, each later one at least the high
bid plus the auction's minimum increment; bids at or after ``created_at + duration_s`` are
refused (chat stays open). Accepted bids and chat go to the whole room, the sender included;
a refused input gets an ``error`` message to its sender only, and the connection stays open.
A bid is checked and stored in one SQLite transaction and broadcast while its room's lock is
held, so concurrent bidders produce one strictly increasing history that every member receives
in the same order.

Unknown auction ids are refused during the handshake, before any ``accept``, so no WebSocket
is ever opened for them. The app answers with the ASGI WebSocket Denial Response extension:
an ``HTTP 404`` whose JSON body is ``{"detail": "unknown auction"}``. uvicorn 0.54 supports the
extension on all three WebSocket implementations (``websockets``, ``websockets-sansio``,
``wsproto``), so clients on each see the same rejected handshake: status 404 and that body (a
browser's ``WebSocket`` only reports a failed connection). The usual alternative,
``websocket.close(code=4404, ...)`` before accept, is answered by uvicorn on all three with a
bare ``HTTP 403`` whose body is empty (the close code and reason never reach the client), which
says "forbidden" rather than "not found"; the app only falls back to it on a server without
the extension. Known quirk: uvicorn 0.54's ``websockets-sansio`` also logs a spurious
"ASGI callable returned without completing handshake." at ERROR after a denial response (the
client still gets the 404; upstream pull request Kludex/uvicorn#3138).
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Response, WebSocket, WebSocketDisconnect
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints

from demo_app.errors import Rejected
from demo_app.manager import ConnectionManager
from demo_app.money import MAX_AMOUNT, to_cents
from demo_app.page import render_index
from demo_app.protocol import (
    STATE_BIDS,
    STATE_CHAT,
    BidIn,
    ChatIn,
    auction_json,
    bid_event,
    bid_json,
    chat_event,
    dumps,
    error_event,
    parse_client_message,
    state_event,
)
from demo_app.store import AuctionStore

DB_ENV = "WSTRACE_DEMO_DB"
DEFAULT_DB = "auction.db"
MAX_ITEM_CHARS = 200
MAX_DURATION_S = 30 * 24 * 3600.0
UNKNOWN_AUCTION = "unknown auction"


def default_db_path() -> str:
    """``$WSTRACE_DEMO_DB``, else ``auction.db`` in the current directory."""
    return os.environ.get(DB_ENV) or DEFAULT_DB


def _json_number(value: Any) -> Any:
    """Prices are JSON numbers: refuse strings and booleans (true is an int in Python)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        raise ValueError("must be a JSON number")
    return value


Price = Annotated[
    Decimal,
    BeforeValidator(_json_number),
    Field(gt=0, le=MAX_AMOUNT, decimal_places=2),
]


class AuctionIn(BaseModel):
    """Body of ``POST /auctions``; anything else is a 422 that names the field and the reason."""

    model_config = ConfigDict(extra="forbid")

    item: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_ITEM_CHARS)
    ]
    starting_price: Price
    duration_s: Annotated[float, Field(strict=True, gt=0, le=MAX_DURATION_S, allow_inf_nan=False)]
    min_increment: Price = Decimal(1)


def create_app(
    db_path: str | os.PathLike[str], *, seed: bool = False, cors_origins: Sequence[str] = ("*",)
) -> FastAPI:
    """Build the app on the SQLite file ``db_path`` (created on startup or first use).

    ``seed`` adds a "Vintage typewriter" auction when the database has none.
    """
    store = AuctionStore(db_path, seed=seed)
    manager = ConnectionManager()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store.open()
        try:
            yield
        finally:
            store.close()

    app = FastAPI(title="wstrace auction demo", lifespan=lifespan)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type"],
    )
    app.state.store = store
    app.state.manager = manager

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(render_index(store.list_auctions(), time.time()))

    @app.post("/auctions", status_code=201)
    async def create_auction(body: AuctionIn, response: Response) -> dict[str, Any]:
        auction = store.create_auction(
            body.item, to_cents(body.starting_price), to_cents(body.min_increment), body.duration_s
        )
        response.headers["Location"] = f"/auctions/{auction.id}"
        return {**auction_json(auction, time.time()), "bids": []}

    @app.get("/auctions")
    async def list_auctions() -> list[dict[str, Any]]:
        now = time.time()
        return [auction_json(auction, now) for auction in store.list_auctions()]

    @app.get("/auctions/{auction_id}")
    async def get_auction(auction_id: str) -> dict[str, Any]:
        auction = store.get_auction(auction_id)
        if auction is None:
            raise HTTPException(status_code=404, detail=UNKNOWN_AUCTION)
        bids = [bid_json(bid) for bid in store.bids(auction.id)]
        return {**auction_json(auction, time.time()), "bids": bids}

    def room_state(auction_id: str) -> dict[str, Any]:
        room = store.room(auction_id, bids=STATE_BIDS, chat=STATE_CHAT)
        assert room is not None  # auctions are never deleted
        return state_event(room, time.time())

    def record(action: BidIn | ChatIn, auction_id: int) -> dict[str, Any]:
        """Store an accepted action and return the event that announces it."""
        if isinstance(action, BidIn):
            return bid_event(store.place_bid(auction_id, action.bidder, action.amount_cents))
        return chat_event(store.add_chat(auction_id, action.sender, action.text))

    async def handle_message(websocket: WebSocket, auction_id: str, data: str | None) -> None:
        """Broadcast what the auction accepts; tell the sender alone what it refuses."""
        try:
            action = parse_client_message(data)
            async with manager.lock_for(auction_id):
                await manager.broadcast(record(action, int(auction_id)), auction_id)
        except Rejected as rejected:
            await websocket.send_text(dumps(error_event(rejected)))

    @app.websocket("/ws/auction/{auctionID}")
    async def websocket_endpoint(websocket: WebSocket, auctionID: str) -> None:
        if store.get_auction(auctionID) is None:
            await refuse_handshake(websocket, 404, UNKNOWN_AUCTION)
            return
        await manager.connect(websocket, auctionID, lambda: room_state(auctionID))
        try:
            while True:
                try:
                    data: str | None = await websocket.receive_text()
                except KeyError:  # a binary message: Starlette's receive_text reads text only
                    data = None
                await handle_message(websocket, auctionID, data)
        except WebSocketDisconnect:
            manager.disconnect(websocket)

    return app


async def refuse_handshake(websocket: WebSocket, status: int, reason: str) -> None:
    """Reject the opening handshake with ``status`` and ``reason`` (see the module docstring)."""
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        denial = JSONResponse({"detail": reason}, status_code=status)
        await websocket.send_denial_response(denial)
    else:
        await websocket.close(code=4000 + status, reason=reason)


app = create_app(default_db_path(), seed=True)
