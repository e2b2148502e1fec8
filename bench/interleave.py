"""Handshake latency of every variant, measured in interleaved slices: one process drives the
servers of all variants, running at once, in turn.

    python -m bench.interleave --target untraced=PORT:CONTROL --target conn-spans=PORT:CONTROL \\
        --handshakes 500 --groups 4

Run one after another, each variant's handshakes met the machine as it was in its own
seconds: on a shared host, the same code measured a handshake p50 ratio anywhere from 1.2×
to 1.45× from one run to the next.  Here every variant runs a short slice of connect /
greeting / close loops (:func:`bench.load.handshake`), then the next variant does, the order
rotating from cycle to cycle, so every variant meets the same moments of the machine and
their ratio keeps only what the tracing costs.  After its slice a server flushes its spans
(through its export process), so it is idle while the others are measured.

The cycles are split into ``--groups`` groups (one per round of the benchmark); each group's
figures are those of :func:`bench.load.handshake_figures`, its CPU and garbage collector time
read around each slice.  Prints one JSON object: ``{variant: [figures of each group]}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
from typing import Any

from bench.load import (
    ServerControl,
    connect_options,
    create_auction,
    handshake,
    handshake_figures,
)

SLICE = 25
"""Handshakes per slice: a few tens of milliseconds, shorter than the machine's swings."""
WARMUP = 20
"""Unmeasured handshakes per variant before the first cycle."""


class Target:
    """One variant's server: its room's URI, its control port, and what it measured so far."""

    def __init__(self, variant: str, port: int, control: ServerControl) -> None:
        self.variant = variant
        self.uri = f"ws://127.0.0.1:{port}/ws/auction/{create_auction(port, 'handshakes')}"
        self.control = control
        self.latencies: list[float] = []
        self.cpu_s = 0.0
        self.gc_s = 0.0

    async def run_slice(self, count: int, options: dict[str, Any]) -> None:
        """``count`` handshakes, then a flush: the server's CPU over both is the slice's."""
        cpu0, _, _, gc0 = await self.control.cpus()
        for _ in range(count):
            self.latencies.append(await handshake(self.uri, options))
        cpu1, _, _, gc1 = await self.control.cpus(flush=True)
        self.cpu_s += cpu1 - cpu0
        self.gc_s += gc1 - gc0

    def take_group(self) -> dict[str, Any]:
        """The figures of what was measured since the last group, and start a new one."""
        figures = handshake_figures(self.latencies, self.cpu_s, self.gc_s)
        self.latencies, self.cpu_s, self.gc_s = [], 0.0, 0.0
        return figures


def slice_size(handshakes: int, groups: int) -> int:
    """:data:`SLICE`, or less when there are too few handshakes for two cycles a group."""
    return max(1, min(SLICE, handshakes // (2 * groups)))


async def measure(
    servers: dict[str, tuple[int, int]],
    handshakes: int,
    groups: int,
    timeout: float,
    compression: bool = False,
) -> dict[str, list[dict[str, Any]]]:
    """``servers``: variant -> (port, control port).  At least ``handshakes`` per variant;
    ``compression``: the clients offer permessage-deflate."""
    options = connect_options(compression, timeout)
    targets = []
    for variant, (port, control_port) in servers.items():
        targets.append(Target(variant, port, await ServerControl.open(control_port)))
    try:
        for target in targets:
            for _ in range(WARMUP):
                await asyncio.wait_for(handshake(target.uri, options), timeout)
            await target.control.flush()
        size = slice_size(handshakes, groups)
        cycles_per_group = math.ceil(handshakes / size / groups)
        result: dict[str, list[dict[str, Any]]] = {t.variant: [] for t in targets}
        cycle = 0
        for _ in range(groups):
            for _ in range(cycles_per_group):
                shift = cycle % len(targets)
                for target in targets[shift:] + targets[:shift]:
                    await asyncio.wait_for(target.run_slice(size, options), timeout * size)
                cycle += 1
            for target in targets:
                result[target.variant].append(target.take_group())
        return result
    finally:
        for target in targets:
            target.control.close()


def _target(text: str) -> tuple[str, tuple[int, int]]:
    variant, _, ports = text.partition("=")
    port, _, control = ports.partition(":")
    return variant, (int(port), int(control))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", action="append", type=_target, required=True,
                        help="VARIANT=PORT:CONTROL_PORT, once per server")
    parser.add_argument("--handshakes", type=int, default=500, help="per variant, at least")
    parser.add_argument("--groups", type=int, default=4, help="groups of cycles (rounds)")
    parser.add_argument("--timeout", type=float, default=20.0, help="bound on each handshake")
    parser.add_argument("--compression", action="store_true", help="offer permessage-deflate")
    args = parser.parse_args()
    servers = dict(args.target)
    figures = measure(servers, args.handshakes, args.groups, args.timeout, args.compression)
    print(json.dumps(asyncio.run(figures)))


if __name__ == "__main__":
    main()
