"""The load generator: one process that drives one benchmark server and measures it.

    python -m bench.load --port P --control-port C [--clients 4 --messages 400 ...]

It prints one JSON object (the figures of this server) on stdout.  Phases, in order:

1. **idle** — after a few warm-up connections, server RSS (after a span flush and
   ``gc.collect()``) before and after opening ``--idle`` connections that then stay idle:
   RSS delta / connections.  It runs first so that every variant's server comes to it with the
   same history: memory freed by an earlier phase would otherwise be reused by the idle
   connections and hide what they cost.
2. **echo** — ``--clients`` clients, each alone in its own auction room, each sending bids one
   at a time and awaiting the room's broadcast of it (which, in a room of one, is the echo to
   the sender): each message is one receive and one send on the server.  The window lasts for
   at least ``--messages`` messages and at least ``--echo-seconds``, so that a cheap server is
   measured over as long a window as a costly one.  Server CPU is read over the control port
   before and after (after a span flush, so the export of the window's spans is charged to
   it); wall time gives messages per second.
3. **fan-out** — ``--fanout-size`` bidders in one room; one of them bids, at least
   ``--fanout`` times and for at least ``--fanout-seconds``; for each bid, the time from the
   send to the last of the bidders receiving it, and server CPU per fan-out.
4. **handshakes** — ``--handshakes`` sequential connect / greeting / close loops; the time
   ``connect()`` takes (TCP connect, upgrade request, 101 response) is the handshake latency.

Every wait is bounded; a phase that does not finish in time fails the run with an error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

PHASES = ("idle", "echo", "fanout", "handshakes")

BID_PREFIX = '{"type":"bid"'
"""How the auction app's broadcast of an accepted bid starts (compact JSON, type first)."""
MAX_ERRORS = 20
"""Unexpected replies noted per load generator; the rest are not."""


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class ServerControl:
    """Client of the server's control port (see :mod:`bench.server`)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> ServerControl:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def ask(self, command: str, timeout: float = 60.0) -> dict[str, Any]:
        self.writer.write(command.encode() + b"\n")
        await self.writer.drain()
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise ConnectionError("control port closed")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply

    async def cpu(self) -> float:
        return float((await self.ask("cpu"))["cpu"])

    async def flush(self) -> float:
        return float((await self.ask("flush"))["cpu"])

    async def answers(self) -> list[float]:
        """The server's µs from each connection's arrival to its 101, since the last call."""
        return [float(us) for us in (await self.ask("answers"))["answer_us"]]

    async def cpus(self, flush: bool = False) -> tuple[float, float, float, float]:
        """CPU seconds of the server, of its span export process (0 without one), of the
        server's span-export threads (part of the server's), and seconds the server spent in
        its garbage collector (part of the server's too)."""
        reply = await self.ask("flush" if flush else "cpu")
        return (
            float(reply["cpu"]),
            float(reply.get("export_cpu", 0.0)),
            float(reply.get("writer_cpu", 0.0)),
            float(reply.get("gc", 0.0)),
        )

    async def rss(self) -> int:
        return int((await self.ask("rss"))["rss"])

    def close(self) -> None:
        self.writer.close()


def create_auction(port: int, item: str, timeout: float = 10.0) -> int:
    """``POST /auctions``; returns the new auction's id."""
    body = json.dumps({"item": item, "starting_price": 1, "duration_s": 86400}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/auctions",
        data=body,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        if response.status != 201:
            raise RuntimeError(f"POST /auctions answered {response.status}")
        return int(json.loads(response.read())["id"])


def connect_options(compression: bool, timeout: float) -> dict[str, Any]:
    """How every client of the benchmark connects (``websockets.asyncio.client.connect``)."""
    return {
        "compression": "deflate" if compression else None,
        "open_timeout": timeout,
        "close_timeout": 5,
        "ping_interval": None,
        "max_queue": None,
    }


async def handshake(uri: str, options: dict[str, Any]) -> float:
    """One connect / greeting / close loop; the seconds ``connect()`` took (TCP connect,
    upgrade request, 101 response)."""
    started = time.perf_counter()
    ws = await connect(uri, **options)
    took = time.perf_counter() - started
    await ws.recv()
    await ws.close()
    return took


def handshake_figures(
    latencies: list[float], cpu_s: float, gc_s: float, answers: Sequence[float] = ()
) -> dict[str, Any]:
    """The figures of a run of handshake loops: ``latencies`` in seconds, the server's CPU
    and garbage-collector seconds over them, and its µs from each connection's arrival to
    its 101 (``answers``, if the server measured them)."""
    count = max(1, len(latencies))
    figures: dict[str, Any] = {
        "handshakes": len(latencies),
        "handshake_ms_p50": percentile(latencies, 50) * 1e3,
        "handshake_ms_p90": percentile(latencies, 90) * 1e3,
        "handshake_ms_p99": percentile(latencies, 99) * 1e3,
        "handshake_cpu_us": cpu_s / count * 1e6,
        "handshake_gc_us": gc_s / count * 1e6,
        "handshake_ms": [round(x * 1e3, 4) for x in latencies],
    }
    if answers:
        figures["handshake_answer_us_p50"] = percentile(list(answers), 50)
        figures["handshake_answer_us"] = [round(x, 1) for x in answers]
    return figures


class Room:
    """One auction room seen from the load generator: its URI and the next valid bid."""

    def __init__(self, port: int, auction_id: int) -> None:
        self.uri = f"ws://127.0.0.1:{port}/ws/auction/{auction_id}"
        self.next_amount = 1

    def bid(self, bidder: str) -> str:
        amount, self.next_amount = self.next_amount, self.next_amount + 1
        return f'{{"type":"bid","bidder":"{bidder}","amount":{amount}}}'


async def join(uri: str, options: dict[str, Any], errors: list[str]) -> ClientConnection:
    """Connect to a room and read the ``state`` message the app greets joiners with (anything
    else is noted in ``errors``)."""
    ws = await connect(uri, **options)
    greeting = await ws.recv()
    if not str(greeting).startswith('{"type":"state"') and len(errors) < MAX_ERRORS:
        errors.append(f"unexpected greeting {str(greeting)[:80]!r}")
    return ws


def check_bid(reply: Any, errors: list[str]) -> None:
    """A reply to a bid must be the room's broadcast of it; anything else is noted."""
    if not str(reply).startswith(BID_PREFIX) and len(errors) < MAX_ERRORS:
        errors.append(f"unexpected reply {str(reply)[:120]!r}")


class EchoClient:
    """One echo client: alone in its auction room, it bids and awaits the room's broadcast of
    the bid (in a room of one, the echo to the sender): one receive and one send on the
    server per message."""

    def __init__(self, ws: ClientConnection, room: Room, name: str) -> None:
        self.ws = ws
        self.room = room
        self.name = name

    async def bids(self, count: int, until: float, check: Callable[[Any], None]) -> int:
        """At least ``count`` bids, and until ``until`` (``time.perf_counter()``); how many."""
        sent = 0
        while sent < count or time.perf_counter() < until:
            await self.ws.send(self.room.bid(self.name))
            check(await self.ws.recv())
            sent += 1
        return sent


def share(total: int, parts: int) -> list[int]:
    """``total`` split as evenly as can be into ``parts`` (messages among clients, a round's
    handshakes or messages into slices)."""
    return [total // parts + (i < total % parts) for i in range(parts)]


async def exchange(
    clients: Sequence[EchoClient], counts: Sequence[int], seconds: float, bound: float,
    check: Callable[[Any], None],
) -> int:
    """Every client bids its count (and for at least ``seconds``), all at once; the messages
    echoed.  The whole exchange is bounded by ``bound`` + ``seconds``."""
    until = time.perf_counter() + seconds
    sent = await asyncio.wait_for(
        asyncio.gather(*(
            client.bids(count, until, check)
            for client, count in zip(clients, counts, strict=True)
        )),
        bound + seconds,
    )  # fmt: skip
    return sum(sent)


@dataclass
class EchoWindows:
    """What one server's echo windows measured, summed: messages, wall time, and the CPU
    seconds of :meth:`ServerControl.cpus` over each window (read before it, and after it once
    its spans are flushed: their export is charged to it)."""

    windows: int = 0
    messages: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    export_s: float = 0.0
    writer_s: float = 0.0
    gc_s: float = 0.0

    async def measure(
        self, control: ServerControl, clients: Sequence[EchoClient], counts: Sequence[int],
        seconds: float, bound: float, check: Callable[[Any], None],
    ) -> None:
        """One window: ``clients`` bid ``counts`` (see :func:`exchange`)."""
        cpu0, export0, writer0, gc0 = await control.cpus()
        started = time.perf_counter()
        echoed = await exchange(clients, counts, seconds, bound, check)
        wall = time.perf_counter() - started
        cpu1, export1, writer1, gc1 = await control.cpus(flush=True)
        self.windows += 1
        self.messages += echoed
        self.wall_s += wall
        self.cpu_s += cpu1 - cpu0
        self.export_s += export1 - export0
        self.writer_s += writer1 - writer0
        self.gc_s += gc1 - gc0

    def figures(self, clients: int) -> dict[str, Any]:
        total = max(1, self.messages)
        return {
            "messages": self.messages,
            "echo_windows": self.windows,
            "clients": clients,
            "echo_wall_s": self.wall_s,
            "echo_cpu_s": self.cpu_s,
            "cpu_per_msg_us": self.cpu_s / total * 1e6,
            "export_cpu_per_msg_us": self.export_s / total * 1e6,
            "writer_cpu_per_msg_us": self.writer_s / total * 1e6,
            "gc_per_msg_us": self.gc_s / total * 1e6,
            "total_cpu_per_msg_us": (self.cpu_s + self.export_s) / total * 1e6,
            "msg_per_s": self.messages / self.wall_s if self.wall_s else math.nan,
        }


class Load:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.port: int = args.port
        self.errors: list[str] = []
        self.connect_options = connect_options(args.compression, args.timeout)

    async def join(self, room: Room) -> ClientConnection:
        return await join(room.uri, self.connect_options, self.errors)

    async def join_many(self, room: Room, count: int, parallel: int = 32) -> list[ClientConnection]:
        gate = asyncio.Semaphore(parallel)

        async def one() -> ClientConnection:
            async with gate:
                return await self.join(room)

        return list(await asyncio.gather(*(one() for _ in range(count))))

    async def close_all(self, connections: Sequence[ClientConnection]) -> None:
        async def close(ws: ClientConnection) -> None:
            try:
                await asyncio.wait_for(ws.close(), 5)
            except Exception:
                ws.transport.abort()

        await asyncio.gather(*(close(ws) for ws in connections))

    def check(self, reply: Any) -> None:
        check_bid(reply, self.errors)

    # -- phases ----------------------------------------------------------------------------

    async def echo(self, control: ServerControl, rooms: list[Room]) -> dict[str, Any]:
        args = self.args
        clients = [EchoClient(await self.join(room), room, f"echo{i}")
                   for i, room in enumerate(rooms)]
        bound = args.timeout * 6
        await exchange(clients, [args.warmup] * len(clients), 0.0, bound, self.check)
        await control.flush()
        windows = EchoWindows()
        await windows.measure(
            control, clients, share(args.messages, len(clients)), args.echo_seconds, bound,
            self.check,
        )
        await self.close_all([client.ws for client in clients])
        return windows.figures(len(clients))

    async def fanout(self, control: ServerControl, room: Room) -> dict[str, Any]:
        args = self.args
        clients = await self.join_many(room, args.fanout_size)
        sender = clients[0]

        async def arrival(ws: ClientConnection) -> float:
            reply = await ws.recv()
            arrived = time.perf_counter()
            self.check(reply)
            return arrived

        async def one() -> float:
            waiters = [asyncio.ensure_future(arrival(ws)) for ws in clients]
            t0 = time.perf_counter()
            await sender.send(room.bid("fan"))
            try:
                arrived = await asyncio.wait_for(asyncio.gather(*waiters), args.timeout)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            return max(arrived) - t0

        for _ in range(min(args.warmup, 5)):
            await one()
        await control.flush()
        cpu0 = await control.cpu()
        latencies: list[float] = []
        until = time.perf_counter() + args.fanout_seconds
        while len(latencies) < args.fanout or time.perf_counter() < until:
            latencies.append(await one())
        cpu1 = await control.flush()
        await self.close_all(clients)
        return {
            "fanouts": len(latencies),
            "fanout_size": args.fanout_size,
            "fanout_ms_p50": percentile(latencies, 50) * 1e3,
            "fanout_ms_p99": percentile(latencies, 99) * 1e3,
            "fanout_cpu_us": (cpu1 - cpu0) / len(latencies) * 1e6,
        }

    async def handshakes(self, control: ServerControl, room: Room) -> dict[str, Any]:
        args = self.args

        async def loop(count: int) -> list[float]:
            return [await handshake(room.uri, self.connect_options) for _ in range(count)]

        await asyncio.wait_for(loop(min(args.warmup, 20)), args.timeout * 6)
        await control.flush()
        await control.answers()  # the warm-up's
        cpu0, _, _, gc0 = await control.cpus()
        latencies = await asyncio.wait_for(loop(args.handshakes), args.timeout * 30)
        cpu1, _, _, gc1 = await control.cpus(flush=True)
        return handshake_figures(latencies, cpu1 - cpu0, gc1 - gc0, await control.answers())

    async def idle(self, control: ServerControl, room: Room) -> dict[str, Any]:
        args = self.args
        # Warm every code path a connection takes (lazy imports, caches) before the baseline.
        await self.close_all(await self.join_many(room, min(args.warmup, 20)))
        await asyncio.sleep(args.settle)
        before = await control.rss()
        if args.tracemalloc:
            await control.ask("tracemalloc-start")
        clients = await asyncio.wait_for(self.join_many(room, args.idle), args.timeout * 30)
        await asyncio.sleep(args.settle)
        after = await control.rss()
        allocations = await control.ask("tracemalloc-report") if args.tracemalloc else None
        await self.close_all(clients)
        result = {
            "idle": args.idle,
            "idle_rss_before": before,
            "idle_rss_after": after,
            "idle_kib_per_conn": (after - before) / args.idle / 1024.0,
        }
        if allocations is not None:
            result["idle_tracemalloc"] = allocations
        return result

    async def run(self) -> dict[str, Any]:
        args = self.args
        control = await ServerControl.open(args.control_port)
        try:
            ids = [create_auction(self.port, f"bench room {i}") for i in range(args.clients + 3)]
            rooms = [Room(self.port, i) for i in ids]
            result: dict[str, Any] = {"phases": list(args.phases)}
            # Memory first: every variant's server then has the same history (started, a few
            # warm-up connections), so no phase's freed memory is reused by the idle connections.
            if "idle" in args.phases:
                result.update(await self.idle(control, rooms[args.clients + 2]))
            if "echo" in args.phases:
                result.update(await self.echo(control, rooms[: args.clients]))
            if "fanout" in args.phases:
                result.update(await self.fanout(control, rooms[args.clients]))
            if "handshakes" in args.phases:
                result.update(await self.handshakes(control, rooms[args.clients + 1]))
            result["errors"] = self.errors
            return result
        finally:
            control.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--control-port", type=int, required=True)
    parser.add_argument("--clients", type=int, default=4, help="echo clients, one room each")
    parser.add_argument("--messages", type=int, default=400,
                        help="echoed messages, at least (all clients together)")
    parser.add_argument("--echo-seconds", type=float, default=1.5,
                        help="the echo window lasts at least this long")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured messages per client")
    parser.add_argument("--fanout", type=int, default=30, help="measured fan-outs, at least")
    parser.add_argument("--fanout-seconds", type=float, default=1.0,
                        help="the fan-out window lasts at least this long")
    parser.add_argument("--fanout-size", type=int, default=50, help="bidders in the room")
    parser.add_argument("--handshakes", type=int, default=125)
    parser.add_argument("--idle", type=int, default=125, help="idle connections held open")
    parser.add_argument("--settle", type=float, default=0.3, help="seconds before the RSS read")
    parser.add_argument("--timeout", type=float, default=20.0, help="bound on each wait")
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="report where the idle connections' memory was allocated")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {PHASES}"
    )
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    if not args.phases or any(p not in PHASES for p in args.phases):
        parser.error(f"--phases must name some of {PHASES}")
    for name in ("clients", "messages", "fanout", "fanout_size", "handshakes", "idle"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    result = asyncio.run(Load(args).run())
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
