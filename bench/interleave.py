"""Echo CPU and handshake latency of every variant, measured in interleaved slices: one process
drives the servers of all variants, running at once, in turn.

    python -m bench.interleave --target untraced=PORT:CONTROL --target conn-spans=PORT:CONTROL \\
        --messages 4000 --handshakes 125

Run one after another, each variant met the machine as it was in its own seconds: on a shared
host, the same code measured a server CPU ratio anywhere from 1.1× to 1.5× from one round to the
next, and a handshake p50 ratio from 1.2× to 1.45×.  Here every variant runs a short slice
(echoed messages, or connect / greeting / close loops), then the next variant does, the order
rotating from cycle to cycle, so every variant meets the same moments of the machine and their
ratio keeps only what the tracing costs.  After its slice a server flushes its spans (through
its export process, whose CPU is charged to the slice), so it is idle while the others are
measured.

Echo first: every variant gets fresh rooms, one per client, warmed up, then bids in slices of
the same number of messages for every variant, so that every variant's rooms hold as many bids
at every moment (the auction app's work per bid grows with them).  Then the handshakes.  The
figures are those of :class:`bench.load.EchoWindows` and :func:`bench.load.handshake_figures`,
the CPU read around each slice.  Prints one JSON object: ``{variant: figures}``.

The benchmark (:func:`bench.runner.interleave`) runs this once a round, each time with fresh
servers: a server process keeps its own luck for its whole life (where its memory lies, which
CPU caches it shares), which moved a variant's CPU per message by up to a tenth against the
others' in one run; fresh servers each round let that vary from round to round, as the median
of the rounds expects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from typing import Any

from bench.load import (
    EchoClient,
    EchoWindows,
    Room,
    ServerControl,
    check_bid,
    connect_options,
    create_auction,
    exchange,
    handshake,
    handshake_figures,
    join,
    share,
)

INTERLEAVED = ("echo", "handshakes")
"""The phases measured here (the others run one server at a time, :mod:`bench.runner`)."""
SLICE = 25
"""Handshakes per slice: a few tens of milliseconds, shorter than the machine's swings."""
ECHO_SLICE = 400
"""Echoed messages per slice: a few tenths of a second."""
WARMUP = 20
"""Unmeasured handshakes per variant before the first cycle."""


class Target:
    """One variant's server: its rooms, its control port, and what it measured so far."""

    def __init__(self, variant: str, port: int, control: ServerControl) -> None:
        self.variant = variant
        self.port = port
        self.uri = f"ws://127.0.0.1:{port}/ws/auction/{create_auction(port, 'handshakes')}"
        self.control = control
        self.errors: list[str] = []
        self.clients: list[EchoClient] = []
        self.windows = EchoWindows()
        self.latencies: list[float] = []
        self.answers: list[float] = []
        self.cpu_s = 0.0
        self.gc_s = 0.0

    def check(self, reply: Any) -> None:
        check_bid(reply, self.errors)

    async def open_rooms(self, clients: int, warmup: int, options: dict[str, Any]) -> None:
        """Fresh rooms, one client alone in each, ``warmup`` unmeasured bids each."""
        bound = options["open_timeout"] * 6
        for i in range(clients):
            room = Room(self.port, create_auction(self.port, f"echo room {i}"))
            ws = await asyncio.wait_for(join(room.uri, options, self.errors), bound)
            self.clients.append(EchoClient(ws, room, f"echo{i}"))
        await exchange(self.clients, [warmup] * clients, 0.0, bound, self.check)
        await self.control.flush()

    async def echo_slice(self, messages: int, bound: float) -> None:
        """``messages`` echoed, shared among the clients; then a flush."""
        counts = share(messages, len(self.clients))
        await self.windows.measure(self.control, self.clients, counts, 0.0, bound, self.check)

    async def take_echo_figures(self) -> dict[str, Any]:
        """The echo figures; the rooms are left."""
        figures = self.windows.figures(len(self.clients))
        await asyncio.gather(*(client.ws.close() for client in self.clients))
        self.clients, self.windows = [], EchoWindows()
        return figures

    async def handshake_slice(self, count: int, options: dict[str, Any]) -> None:
        """``count`` handshakes, then a flush: the server's CPU over both is the slice's."""
        await self.control.answers()  # the warm-up's, or the slices' of other phases: not ours
        cpu0, _, _, gc0 = await self.control.cpus()
        for _ in range(count):
            self.latencies.append(await handshake(self.uri, options))
        cpu1, _, _, gc1 = await self.control.cpus(flush=True)
        self.cpu_s += cpu1 - cpu0
        self.gc_s += gc1 - gc0
        self.answers += await self.control.answers()

    def handshake_figures(self) -> dict[str, Any]:
        return handshake_figures(self.latencies, self.cpu_s, self.gc_s, self.answers)


def slices(total: int, most: int) -> list[int]:
    """``total`` split into slices of at most ``most``, as even as can be, and at least two
    when there is enough for two: one cycle alone would not interleave anything."""
    cycles = max(2, math.ceil(total / most)) if total >= 2 else 1
    return share(total, cycles)


def _in_turn(targets: list[Target], cycle: int) -> list[Target]:
    """The targets in cycle ``cycle``'s order: rotated by one place a cycle."""
    shift = cycle % len(targets)
    return targets[shift:] + targets[:shift]


async def _echo(
    targets: list[Target], messages: int, clients: int, warmup: int, options: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    bound = options["open_timeout"] * 6
    for target in targets:
        await target.open_rooms(clients, warmup, options)
    for cycle, size in enumerate(slices(messages, ECHO_SLICE)):
        for target in _in_turn(targets, cycle):
            await target.echo_slice(size, bound)
    return {target.variant: await target.take_echo_figures() for target in targets}


async def _handshakes(
    targets: list[Target], handshakes: int, options: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    timeout = options["open_timeout"]
    for target in targets:
        for _ in range(WARMUP):
            await asyncio.wait_for(handshake(target.uri, options), timeout)
        await target.control.flush()
    for cycle, size in enumerate(slices(handshakes, SLICE)):
        for target in _in_turn(targets, cycle):
            await asyncio.wait_for(target.handshake_slice(size, options), timeout * size)
    return {target.variant: target.handshake_figures() for target in targets}


async def measure(
    servers: dict[str, tuple[int, int]],
    *,
    phases: tuple[str, ...] = INTERLEAVED,
    messages: int = 4000,
    clients: int = 4,
    warmup: int = 100,
    handshakes: int = 125,
    timeout: float = 20.0,
    compression: bool = False,
) -> dict[str, dict[str, Any]]:
    """``servers``: variant -> (port, control port).  Per variant, ``messages`` echoed by
    ``clients`` clients after ``warmup`` bids each; then ``handshakes``;
    ``compression``: the clients offer permessage-deflate.  ``{variant: figures}``."""
    options = connect_options(compression, timeout)
    targets = []
    for variant, (port, control_port) in servers.items():
        targets.append(Target(variant, port, await ServerControl.open(control_port)))
    try:
        parts = []
        if "echo" in phases:
            parts.append(await _echo(targets, messages, clients, warmup, options))
        if "handshakes" in phases:
            parts.append(await _handshakes(targets, handshakes, options))
        return {
            target.variant: {
                **{k: v for part in parts for k, v in part[target.variant].items()},
                "errors": target.errors,
            }
            for target in targets
        }
    finally:
        for target in targets:
            target.control.close()


def _target(text: str) -> tuple[str, tuple[int, int]]:
    variant, _, ports = text.partition("=")
    port, _, control = ports.partition(":")
    return variant, (int(port), int(control))


def _phases(text: str) -> tuple[str, ...]:
    phases = tuple(p.strip() for p in text.split(",") if p.strip())
    if not phases or any(p not in INTERLEAVED for p in phases):
        raise argparse.ArgumentTypeError(f"choose among {', '.join(INTERLEAVED)}")
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", type=_target, required=True,
                        help="VARIANT=PORT:CONTROL_PORT, once per server")
    parser.add_argument("--phases", type=_phases, default=INTERLEAVED,
                        help="comma-separated, among echo, handshakes (both by default)")
    parser.add_argument("--messages", type=int, default=4000, help="echoed, per variant")
    parser.add_argument("--clients", type=int, default=4, help="echo clients, one room each")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured bids per client")
    parser.add_argument("--handshakes", type=int, default=125, help="per variant")
    parser.add_argument("--timeout", type=float, default=20.0, help="bound on each wait")
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args()
    figures = measure(
        dict(args.target), phases=args.phases, messages=args.messages, clients=args.clients,
        warmup=args.warmup, handshakes=args.handshakes, timeout=args.timeout,
        compression=args.compression,
    )  # fmt: skip
    print(json.dumps(asyncio.run(figures)))


if __name__ == "__main__":
    main()
