"""The auction app end to end: a real uvicorn on a loopback port, ``websockets`` clients, httpx.

Every WebSocket test runs on each uvicorn HTTP x WebSocket implementation pair, because the
app's behaviour (refusals, ordering, errors) must not depend on which one serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from demo_app.app import create_app
from tests.support.server import IMPL_PAIRS, RunningServer, free_port, run_server

T = TypeVar("T")
TIMEOUT = 10.0
PAIR_IDS = [f"{http}-{ws}" for http, ws in IMPL_PAIRS]
all_impls = pytest.mark.parametrize(("http", "ws"), IMPL_PAIRS, ids=PAIR_IDS)


# -- helpers ------------------------------------------------------------------------------------


def run(body: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
    """Run an async test body with an overall deadline, so that nothing can hang."""
    return asyncio.run(asyncio.wait_for(body, timeout))


@contextlib.contextmanager
def serve(
    db_path: Path, http: str = "h11", ws: str = "websockets-sansio", *, seed: bool = False
) -> Iterator[RunningServer]:
    """A fresh app on ``db_path`` behind a real uvicorn, with its startup and shutdown run."""
    with run_server(create_app(db_path, seed=seed), http=http, ws=ws, lifespan="on") as server:
        yield server


def rest(server: RunningServer) -> httpx.Client:
    return httpx.Client(base_url=server.http_url, timeout=TIMEOUT, trust_env=False)


def new_auction(server: RunningServer, **fields: Any) -> dict[str, Any]:
    body = {"item": "Test lot", "starting_price": 10, "duration_s": 600, **fields}
    with rest(server) as client:
        response = client.post("/auctions", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def get_auction(server: RunningServer, auction_id: int) -> dict[str, Any]:
    with rest(server) as client:
        response = client.get(f"/auctions/{auction_id}")
    assert response.status_code == 200, response.text
    return response.json()


def room_url(server: RunningServer, auction_id: int | str) -> str:
    return f"{server.ws_url}/ws/auction/{auction_id}"


async def recv(ws: ClientConnection) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))


async def send(ws: ClientConnection, message: dict[str, Any] | str | bytes) -> None:
    await ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))


@contextlib.asynccontextmanager
async def joined(
    server: RunningServer, auction_id: int, count: int = 1
) -> AsyncIterator[list[tuple[ClientConnection, dict[str, Any]]]]:
    """``count`` clients in the room, each with the ``state`` message it got on joining."""
    async with contextlib.AsyncExitStack() as stack:
        members = []
        for _ in range(count):
            ws = await stack.enter_async_context(
                connect(
                    room_url(server, auction_id), open_timeout=TIMEOUT, close_timeout=2, proxy=None
                )
            )
            state = await recv(ws)
            assert state["type"] == "state"
            members.append((ws, state))
        yield members


def bid(bidder: str, amount: Any) -> dict[str, Any]:
    return {"type": "bid", "bidder": bidder, "amount": amount}


def chat(sender: str, text: Any) -> dict[str, Any]:
    return {"type": "chat", "sender": sender, "text": text}


def amounts(bids: list[dict[str, Any]]) -> list[tuple[str, float]]:
    return [(b["bidder"], b["amount"]) for b in bids]


# -- WebSocket ----------------------------------------------------------------------------------


@all_impls
def test_join_gets_state_and_bidders_see_each_others_bids(
    db_path: Path, http: str, ws: str
) -> None:
    with serve(db_path, http, ws) as server:
        auction = new_auction(server, item="Brass lamp", starting_price=10, min_increment=2.5)

        async def body() -> None:
            async with joined(server, auction["id"], 2) as [(ann, state), (bob, _)]:
                assert state["auction"]["id"] == auction["id"]
                assert state["auction"]["item"] == "Brass lamp"
                assert state["auction"]["high_bid"] is None
                assert state["auction"]["min_next_bid"] == 10
                assert state["auction"]["closed"] is False
                assert state["bids"] == [] and state["chat"] == []

                await send(ann, bid("ann", 10))
                for member in (ann, bob):
                    assert await recv(member) == {
                        **bid("ann", 10),
                        "at": pytest.approx(time.time(), abs=30),
                    }
                await send(bob, bid("bob", 12.5))
                await send(ann, chat("ann", "hello <b>"))
                for member in (ann, bob):
                    first, second = await recv(member), await recv(member)
                    assert (first["type"], first["bidder"], first["amount"]) == ("bid", "bob", 12.5)
                    assert (second["type"], second["sender"], second["text"]) == (
                        "chat",
                        "ann",
                        "hello <b>",
                    )

            async with joined(server, auction["id"]) as [(_, late)]:
                assert amounts(late["bids"]) == [("ann", 10), ("bob", 12.5)]
                assert [(c["sender"], c["text"]) for c in late["chat"]] == [("ann", "hello <b>")]
                assert late["auction"]["high_bid"] == 12.5
                assert late["auction"]["high_bidder"] == "bob"
                assert late["auction"]["min_next_bid"] == 15

        run(body())
        history = get_auction(server, auction["id"])["bids"]
        assert amounts(history) == [("ann", 10), ("bob", 12.5)]
        assert history[0]["at"] <= history[1]["at"]


BAD_INPUTS: list[tuple[str, Any, str]] = [
    ("not json", "bid 10 please", "bad_json"),
    ("NaN amount", '{"type": "bid", "bidder": "ann", "amount": NaN}', "bad_json"),
    ("array", "[1, 2]", "bad_message"),
    ("string", '"bid"', "bad_message"),
    ("unknown type", {"type": "bet", "bidder": "ann", "amount": 10}, "unknown_type"),
    ("missing type", {"bidder": "ann", "amount": 10}, "unknown_type"),
    ("missing bidder", {"type": "bid", "amount": 10}, "bad_field"),
    ("missing amount", {"type": "bid", "bidder": "ann"}, "bad_field"),
    ("amount as string", bid("ann", "10"), "bad_field"),
    ("amount as bool", bid("ann", True), "bad_field"),
    ("amount null", bid("ann", None), "bad_field"),
    ("negative amount", bid("ann", -5), "bad_field"),
    ("zero amount", bid("ann", 0), "bad_field"),
    ("three decimals", bid("ann", 10.005), "bad_field"),
    ("absurd amount", bid("ann", 1e12), "bad_field"),
    ("bidder not a string", bid(12, 10), "bad_field"),
    ("blank bidder", bid("   ", 10), "bad_field"),
    ("bidder too long", bid("x" * 65, 10), "bad_field"),
    ("bidder with control char", bid("ann\x07", 10), "bad_field"),
    ("chat too long", chat("ann", "x" * 1001), "bad_field"),
    ("chat text not a string", chat("ann", ["hi"]), "bad_field"),
    ("chat without text", {"type": "chat", "sender": "ann"}, "bad_field"),
    ("oversize message", {**chat("ann", "hi"), "padding": "x" * 17_000}, "too_large"),
    ("binary message", json.dumps(bid("ann", 10)).encode(), "binary_message"),
    ("below starting price", bid("ann", 9.99), "bid_too_low"),
]


@all_impls
def test_bad_input_gets_an_error_and_the_connection_survives(
    db_path: Path, http: str, ws: str
) -> None:
    with serve(db_path, http, ws) as server:
        auction = new_auction(server, starting_price=10, min_increment=1)

        async def body() -> None:
            async with joined(server, auction["id"], 2) as [(ann, _), (watcher, _)]:
                for label, payload, code in BAD_INPUTS:
                    await send(ann, payload)
                    reply = await recv(ann)
                    assert reply["type"] == "error", label
                    assert reply["code"] == code, (label, reply)
                    assert isinstance(reply["reason"], str) and reply["reason"], label

                await send(ann, bid("ann", 10))
                assert (await recv(ann))["amount"] == 10
                await send(ann, bid("ann", 10.5))  # under high bid + increment
                reply = await recv(ann)
                assert (reply["type"], reply["code"]) == ("error", "bid_too_low")
                assert "11.00" in reply["reason"]
                await send(ann, bid("ann", 11))
                assert (await recv(ann))["amount"] == 11

                # The other member saw only the two accepted bids, nothing of the rejects.
                seen = [await recv(watcher), await recv(watcher)]
                assert [(m["type"], m["amount"]) for m in seen] == [("bid", 10), ("bid", 11)]

            async with joined(server, auction["id"]) as [(_, late)]:
                assert late["chat"] == []

        run(body())
        assert amounts(get_auction(server, auction["id"])["bids"]) == [("ann", 10), ("ann", 11)]


@all_impls
def test_unknown_auction_is_refused_in_the_handshake(db_path: Path, http: str, ws: str) -> None:
    app = create_app(db_path)
    with run_server(app, http=http, ws=ws, lifespan="on") as server:
        new_auction(server)

        async def body() -> None:
            for unknown in ("999", "0", "01", "abc", "1%20OR%201"):
                with pytest.raises(InvalidStatus) as refused:
                    async with connect(room_url(server, unknown), open_timeout=TIMEOUT, proxy=None):
                        pass
                response = refused.value.response
                assert response.status_code == 404, unknown
                assert json.loads(bytes(response.body)) == {"detail": "unknown auction"}
            assert app.state.manager.rooms == {}  # nobody was let in
            async with joined(server, 1) as [(_, state)]:  # the known one still opens
                assert state["auction"]["id"] == 1

        run(body())


@all_impls
def test_concurrent_bidders_produce_one_strictly_increasing_history(
    db_path: Path, http: str, ws: str
) -> None:
    clients, rounds = 20, 5
    with serve(db_path, http, ws) as server:
        auction = new_auction(server, starting_price=10, min_increment=1)

        def amount_for(client: int, round_: int) -> int:
            # Round 0: everyone bids the starting price at once, so exactly one can win.
            # Later rounds: shuffled amounts, so arrival order and amount order disagree.
            if round_ == 0:
                return 10
            order = list(range(clients))
            random.Random(round_).shuffle(order)
            return 10 + 20 * round_ + order[client]

        async def bidder(
            conn: ClientConnection, me: str, index: int, go: asyncio.Event
        ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            await go.wait()
            for round_ in range(rounds):
                await send(conn, bid(me, amount_for(index, round_)))
                await asyncio.sleep(0)  # let the other bidders' sends interleave
            seen, errors = [], []
            while sum(m["bidder"] == me for m in seen) + len(errors) < rounds:
                message = await recv(conn)
                (errors if message["type"] == "error" else seen).append(message)
            return seen, errors

        async def drain_until_done(conn: ClientConnection) -> list[dict[str, Any]]:
            rest_seen = []
            while (message := await recv(conn))["type"] != "chat":
                rest_seen.append(message)
            assert message["text"] == "done"
            return rest_seen

        async def body() -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
            async with joined(server, auction["id"], clients) as members:
                go = asyncio.Event()
                tasks = [
                    asyncio.create_task(bidder(conn, f"bidder-{i}", i, go))
                    for i, (conn, _) in enumerate(members)
                ]
                go.set()
                results = await asyncio.gather(*tasks)
                # Every bid has had its outcome; a chat now marks the end of the room's stream.
                await send(members[0][0], chat("bidder-0", "done"))
                tails = await asyncio.gather(*(drain_until_done(conn) for conn, _ in members))
            views = [seen + tail for (seen, _), tail in zip(results, tails, strict=True)]
            errors = [error for _, errs in results for error in errs]
            return views, errors

        views, errors = run(body())
        history = amounts(get_auction(server, auction["id"])["bids"])

    accepted = [(m["bidder"], m["amount"]) for m in views[0]]
    assert all(m["type"] == "bid" for view in views for m in view)
    assert all(amounts(view) == accepted for view in views), "members saw different sequences"
    assert accepted == history, "broadcast and stored history differ"
    values = [amount for _, amount in accepted]
    assert all(a < b for a, b in itertools.pairwise(values)), values
    assert values.count(10) == 1 and values[0] == 10
    assert {e["code"] for e in errors} == {"bid_too_low"}
    assert len(accepted) + len(errors) == clients * rounds  # nothing lost, nothing doubled


@all_impls
def test_a_vanished_member_does_not_stop_the_broadcast(db_path: Path, http: str, ws: str) -> None:
    app = create_app(db_path)
    with run_server(app, http=http, ws=ws, lifespan="on") as server:
        auction = new_auction(server)

        async def body() -> None:
            async with joined(server, auction["id"], 3) as [(ann, _), (bob, _), (gone, _)]:
                gone.transport.abort()  # drop the TCP connection without a closing handshake
                await send(ann, bid("ann", 10))
                for member in (ann, bob):
                    assert (await recv(member))["amount"] == 10
                await send(bob, bid("bob", 11))
                for member in (ann, bob):
                    assert (await recv(member))["amount"] == 11
            for _ in range(200):  # the server notices the closes asynchronously
                if not app.state.manager.rooms:
                    break
                await asyncio.sleep(0.01)
            assert app.state.manager.rooms == {}

        run(body())
        assert amounts(get_auction(server, auction["id"])["bids"]) == [("ann", 10), ("bob", 11)]


@all_impls
def test_bids_are_refused_once_the_auction_closes(db_path: Path, http: str, ws: str) -> None:
    with serve(db_path, http, ws) as server:
        auction = new_auction(server, starting_price=10, duration_s=0.8)

        async def body() -> None:
            async with joined(server, auction["id"]) as [(ann, state)]:
                assert state["auction"]["closed"] is False
                await send(ann, bid("ann", 10))
                assert (await recv(ann))["type"] == "bid"
                await asyncio.sleep(max(0.0, auction["ends_at"] - time.time() + 0.05))
                await send(ann, bid("ann", 50))
                reply = await recv(ann)
                assert (reply["type"], reply["code"]) == ("error", "auction_closed")
                await send(ann, chat("ann", "well played"))  # the room stays open for chat
                assert (await recv(ann))["type"] == "chat"
            async with joined(server, auction["id"]) as [(_, late)]:
                assert late["auction"]["closed"] is True

        run(body())
        after = get_auction(server, auction["id"])
        assert after["closed"] is True
        assert amounts(after["bids"]) == [("ann", 10)]


@all_impls
def test_history_survives_a_restart(db_path: Path, http: str, ws: str) -> None:
    with serve(db_path, http, ws) as server:
        auction = new_auction(server, starting_price=10, min_increment=1)

        async def before() -> None:
            async with joined(server, auction["id"]) as [(ann, _)]:
                for message in (bid("ann", 10), bid("bob", 11.5), chat("ann", "see you later")):
                    await send(ann, message)
                    assert (await recv(ann))["type"] == message["type"]

        run(before())

    with serve(db_path, http, ws) as server:  # a new app instance on the same file
        assert amounts(get_auction(server, auction["id"])["bids"]) == [("ann", 10), ("bob", 11.5)]

        async def after() -> None:
            async with joined(server, auction["id"]) as [(cat, state)]:
                assert amounts(state["bids"]) == [("ann", 10), ("bob", 11.5)]
                assert [c["text"] for c in state["chat"]] == ["see you later"]
                assert state["auction"]["high_bid"] == 11.5
                await send(cat, bid("cat", 12))  # the old high bid still sets the bar
                assert (await recv(cat))["code"] == "bid_too_low"
                await send(cat, bid("cat", 12.5))
                assert (await recv(cat))["amount"] == 12.5

        run(after())


# -- REST and the page --------------------------------------------------------------------------


def test_rest_create_list_get(db_path: Path) -> None:
    with serve(db_path) as server, rest(server) as client:
        created = client.post(
            "/auctions", json={"item": "  Oak desk ", "starting_price": 99.99, "duration_s": 60}
        )
        assert created.status_code == 201
        auction = created.json()
        assert created.headers["location"] == f"/auctions/{auction['id']}"
        assert auction["item"] == "Oak desk"
        assert auction["starting_price"] == 99.99
        assert auction["min_increment"] == 1
        assert auction["ends_at"] == pytest.approx(auction["created_at"] + 60)
        assert auction["bids"] == []

        listed = client.get("/auctions")
        assert listed.status_code == 200
        assert [a["id"] for a in listed.json()] == [auction["id"]]
        fetched = client.get(f"/auctions/{auction['id']}")
        assert fetched.status_code == 200
        assert fetched.json()["item"] == "Oak desk" and fetched.json()["bids"] == []

        for missing in ("999", "0", "abc"):
            response = client.get(f"/auctions/{missing}")
            assert response.status_code == 404
            assert response.json() == {"detail": "unknown auction"}

        preflight = client.options(
            "/auctions",
            headers={"Origin": "http://example.test", "Access-Control-Request-Method": "POST"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] in ("*", "http://example.test")


INVALID_BODIES: list[tuple[str, Any]] = [
    ("empty item", {"item": "", "starting_price": 1, "duration_s": 60}),
    ("blank item", {"item": "   ", "starting_price": 1, "duration_s": 60}),
    ("item too long", {"item": "x" * 201, "starting_price": 1, "duration_s": 60}),
    ("item not a string", {"item": 5, "starting_price": 1, "duration_s": 60}),
    ("missing item", {"starting_price": 1, "duration_s": 60}),
    ("zero price", {"item": "a", "starting_price": 0, "duration_s": 60}),
    ("negative price", {"item": "a", "starting_price": -1, "duration_s": 60}),
    ("three decimals", {"item": "a", "starting_price": 1.001, "duration_s": 60}),
    ("price as bool", {"item": "a", "starting_price": True, "duration_s": 60}),
    ("price as string", {"item": "a", "starting_price": "1", "duration_s": 60}),
    ("absurd price", {"item": "a", "starting_price": 1e12, "duration_s": 60}),
    ("zero duration", {"item": "a", "starting_price": 1, "duration_s": 0}),
    ("endless duration", {"item": "a", "starting_price": 1, "duration_s": 1e9}),
    ("duration as bool", {"item": "a", "starting_price": 1, "duration_s": True}),
    ("zero increment", {"item": "a", "starting_price": 1, "duration_s": 60, "min_increment": 0}),
    ("unknown field", {"item": "a", "starting_price": 1, "duration_s": 60, "reserve": 5}),
]


def test_rest_rejects_invalid_bodies_with_422(db_path: Path) -> None:
    with serve(db_path) as server, rest(server) as client:
        for label, body in INVALID_BODIES:
            response = client.post("/auctions", json=body)
            assert response.status_code == 422, label
            detail = response.json()["detail"]
            assert detail and all(d["msg"] for d in detail), label
        not_json = client.post(
            "/auctions", content=b"{item", headers={"Content-Type": "application/json"}
        )
        assert not_json.status_code == 422
        assert client.get("/auctions").json() == []  # nothing was created


def test_page_has_the_button_and_escapes_user_text(db_path: Path) -> None:
    evil = "<script>alert(1)</script>"
    with serve(db_path) as server, rest(server) as client:
        new_auction(server, item=evil)
        page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    html = page.text
    assert "Set For Auction" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert evil not in html
    assert ".innerHTML" not in html and "insertAdjacentHTML" not in html
    assert 'src="http' not in html and 'href="http' not in html  # no CDN: works offline


def test_seed_auction_and_lazy_database(db_path: Path, tmp_path: Path) -> None:
    create_app(db_path, seed=True)
    assert not db_path.exists(), "building the app must not create the database"
    for _ in range(2):  # a second start on the same file must not seed again
        with serve(db_path, seed=True) as server, rest(server) as client:
            auctions = client.get("/auctions").json()
        assert [a["item"] for a in auctions] == ["Vintage typewriter"]
    with serve(tmp_path / "unseeded.db") as server, rest(server) as client:
        assert client.get("/auctions").json() == []


def test_module_app_import_creates_no_file(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WSTRACE_DEMO_DB"}
    subprocess.run(
        [sys.executable, "-c", "import demo_app.app"],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=60,
    )
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_serves_the_app(tmp_path: Path) -> None:
    db = tmp_path / "from-env.db"
    port = free_port()
    env = {**os.environ, "WSTRACE_DEMO_DB": str(db)}
    command = [sys.executable, "-m", "demo_app", "--host", "127.0.0.1", "--port", str(port)]
    command += ["--http", "h11", "--ws", "wsproto", "--log-level", "warning"]
    proc = subprocess.Popen(command, cwd=tmp_path, env=env)
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) as client:
            while True:
                assert proc.poll() is None, "python -m demo_app exited"
                try:
                    auctions = client.get("/auctions", timeout=2).json()
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "python -m demo_app did not start"
                    time.sleep(0.05)
        assert [a["item"] for a in auctions] == ["Vintage typewriter"]

        async def body() -> None:
            url = f"ws://127.0.0.1:{port}/ws/auction/{auctions[0]['id']}"
            async with connect(url, open_timeout=TIMEOUT, proxy=None) as conn:
                assert (await recv(conn))["type"] == "state"

        run(body())
        assert db.exists() and not (tmp_path / "auction.db").exists()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
