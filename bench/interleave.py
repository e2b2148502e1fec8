"""Echo CPU and handshake latency of every variant, measured in interleaved slices: one process
drives the servers of all variants, running at once, in turn.

    python -m bench.interleave --target untraced=PORT:CONTROL --target conn-spans=PORT:CONTROL \\
        --messages 4000 --handshakes 500 --groups 4

Run one after another, each variant met the machine as it was in its own seconds: on a shared
host, the same code measured a server CPU ratio anywhere from 1.1× to 1.5× from one round to the
next, and a handshake p50 ratio from 1.2× to 1.45×.  Here every variant runs a short slice
(echoed messages, or connect / greeting / close loops), then the next variant does, the order
rotating from cycle to cycle, so every variant meets the same moments of the machine and their
ratio keeps only what the tracing costs.  After its slice a server flushes its spans (through
its export process, whose CPU is charged to the slice), so it is idle while the others are
measured.

The cycles can be split into ``--groups`` groups, each with figures of its own.  Echo first:
each group, every variant gets fresh rooms, one per client, warmed up, then bids in slices of
the same number of messages for every variant, so that every variant's rooms hold as many bids
at every moment (the auction app's work per bid grows with them).  Then the handshakes.  A
group's figures are those of :class:`bench.load.EchoWindows` and
:func:`bench.load.handshake_figures`, its CPU read around each slice.  Prints one JSON
object: ``{variant: [figures of each group]}``.

The benchmark (:func:`bench.runner.interleave`) runs one group per round, each round with
fresh servers: a server process keeps its own luck for its whole life (where its memory lies,
which CPU caches it shares), which moved a variant's CPU per message by up to a tenth against
the others' in one run; fresh servers each round let that vary from round to round, as the
median of the rounds expects.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from typing import Any

from bench.load import (
    PHASES,
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

    async def take_echo_group(self) -> dict[str, Any]:
        """The echo figures since the last group; the rooms are left."""
        figures = self.windows.figures(len(self.clients))
        await asyncio.gather(*(client.ws.close() for client in self.clients))
        self.clients, self.windows = [], EchoWindows()
        return figures

    async def handshake_slice(self, count: int, options: dict[str, Any]) -> None:
        """``count`` handshakes, then a flush: the server's CPU over both is the slice's."""
        cpu0, _, _, gc0 = await self.control.cpus()
        for _ in range(count):
            self.latencies.append(await handshake(self.uri, options))
        cpu1, _, _, gc1 = await self.control.cpus(flush=True)
        self.cpu_s += cpu1 - cpu0
        self.gc_s += gc1 - gc0

    def take_handshake_group(self) -> dict[str, Any]:
        """The handshake figures since the last group, and start a new one."""
        figures = handshake_figures(self.latencies, self.cpu_s, self.gc_s)
        self.latencies, self.cpu_s, self.gc_s = [], 0.0, 0.0
        return figures


def slice_size(total: int, groups: int, most: int = SLICE) -> int:
    """``most``, or less when ``total`` is too small for two cycles a group."""
    return max(1, min(most, total // (2 * groups)))


def _in_turn(targets: list[Target], cycle: int) -> list[Target]:
    """The targets in cycle ``cycle``'s order: rotated by one place a cycle."""
    shift = cycle % len(targets)
    return targets[shift:] + targets[:shift]


async def _echo_groups(
    targets: list[Target], messages: int, clients: int, warmup: int, groups: int,
    options: dict[str, Any],
) -> list[dict[str, dict[str, Any]]]:
    size = slice_size(messages, 1, ECHO_SLICE)  # messages: per group
    bound = options["open_timeout"] * 6
    found: list[dict[str, dict[str, Any]]] = []
    for _ in range(groups):
        for target in targets:
            await target.open_rooms(clients, warmup, options)
        for cycle in range(math.ceil(messages / size)):
            for target in _in_turn(targets, cycle):
                await target.echo_slice(size, bound)
        found.append({t.variant: await t.take_echo_group() for t in targets})
    return found


async def _handshake_groups(
    targets: list[Target], handshakes: int, groups: int, options: dict[str, Any]
) -> list[dict[str, dict[str, Any]]]:
    timeout = options["open_timeout"]
    for target in targets:
        for _ in range(WARMUP):
            await asyncio.wait_for(handshake(target.uri, options), timeout)
        await target.control.flush()
    size = slice_size(handshakes, groups)
    cycles_per_group = math.ceil(handshakes / size / groups)
    found: list[dict[str, dict[str, Any]]] = []
    cycle = 0
    for _ in range(groups):
        for _ in range(cycles_per_group):
            for target in _in_turn(targets, cycle):
                await asyncio.wait_for(target.handshake_slice(size, options), timeout * size)
            cycle += 1
        found.append({t.variant: t.take_handshake_group() for t in targets})
    return found


async def measure(
    servers: dict[str, tuple[int, int]],
    *,
    phases: tuple[str, ...] = INTERLEAVED,
    messages: int = 4000,
    clients: int = 4,
    warmup: int = 100,
    handshakes: int = 500,
    groups: int = 4,
    timeout: float = 20.0,
    compression: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """``servers``: variant -> (port, control port).  Per group and variant, ``messages``
    echoed by ``clients`` clients after ``warmup`` bids each; then at least ``handshakes``
    per variant in all; ``compression``: the clients offer permessage-deflate."""
    options = connect_options(compression, timeout)
    targets = []
    for variant, (port, control_port) in servers.items():
        targets.append(Target(variant, port, await ServerControl.open(control_port)))
    try:
        parts: list[list[dict[str, dict[str, Any]]]] = []
        if "echo" in phases:
            parts.append(await _echo_groups(targets, messages, clients, warmup, groups, options))
        if "handshakes" in phases:
            parts.append(await _handshake_groups(targets, handshakes, groups, options))
        result: dict[str, list[dict[str, Any]]] = {}
        for target in targets:
            result[target.variant] = [
                {k: v for part in parts for k, v in part[g][target.variant].items()}
                | {"errors": list(target.errors) if g == 0 else []}
                for g in range(groups)
            ]  # fmt: skip
        return result
    finally:
        for target in targets:
            target.control.close()


def _target(text: str) -> tuple[str, tuple[int, int]]:
    variant, _, ports = text.partition("=")
    port, _, control = ports.partition(":")
    return variant, (int(port), int(control))


def _phases(text: str) -> tuple[str, ...]:
    phases = tuple(p.strip() for p in text.split(",") if p.strip())
    if not phases or any(p not in INTERLEAVED or p not in PHASES for p in phases):
        raise argparse.ArgumentTypeError(f"choose among {', '.join(INTERLEAVED)}")
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", type=_target, required=True,
                        help="VARIANT=PORT:CONTROL_PORT, once per server")
    parser.add_argument("--phases", type=_phases, default=INTERLEAVED,
                        help="comma-separated, among echo, handshakes (both by default)")
    parser.add_argument("--messages", type=int, default=4000, help="echoed, per variant and group")
    parser.add_argument("--clients", type=int, default=4, help="echo clients, one room each")
    parser.add_argument("--warmup", type=int, default=100, help="unmeasured bids per client")
    parser.add_argument("--handshakes", type=int, default=500, help="per variant, at least")
    parser.add_argument("--groups", type=int, default=4, help="groups of cycles (rounds)")
    parser.add_argument("--timeout", type=float, default=20.0, help="bound on each wait")
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args()
    figures = measure(
        dict(args.target), phases=args.phases, messages=args.messages, clients=args.clients,
        warmup=args.warmup, handshakes=args.handshakes, groups=args.groups,
        timeout=args.timeout, compression=args.compression,
    )  # fmt: skip
    print(json.dumps(asyncio.run(figures)))


if __name__ == "__main__":
    main()
