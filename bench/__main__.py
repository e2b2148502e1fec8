"""``python -m bench`` (``make bench``): the overhead benchmark; see :mod:`bench`."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import floor, hooks, profile, report
from bench.load import PHASES
from bench.runner import QUICK, RESULTS_FILE, ROOT, Options, Sizes, py_spy_path, run
from bench.variants import VARIANTS, resolve

RESULTS = ROOT / RESULTS_FILE
"""Where a full run's figures go: the README points here instead of quoting them."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = Sizes()
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Server CPU, throughput, handshake latency, idle memory and fan-out of the "
        "auction app: untraced, under wstrace, and under the peers.",
    )
    parser.add_argument("--rounds", type=int, help=f"interleaved rounds (default {d.rounds})")
    parser.add_argument("--messages", type=int,
                        help="echoed messages per round and variant, the same for every "
                        f"variant (default {d.messages})")
    parser.add_argument("--clients", type=int,
                        help=f"echo clients, each alone in a room (default {d.clients})")
    parser.add_argument("--handshakes", type=int,
                        help="handshakes per variant, shared by the rounds "
                        f"(default {d.handshakes})")
    parser.add_argument("--idle", type=int,
                        help="idle connections per variant, shared by the rounds "
                        f"(default {d.idle})")
    parser.add_argument("--fanout", type=int,
                        help="measured fan-outs per round and variant, the same for every "
                        f"variant (default {d.fanout})")
    parser.add_argument("--fanout-size", type=int,
                        help=f"bidders in the fan-out room (default {d.fanout_size})")
    parser.add_argument("--warmup", type=int,
                        help=f"unmeasured messages per echo client (default {d.warmup})")
    parser.add_argument(
        "--variants",
        help="comma-separated variants (untraced is always added; 'all' for every one): "
        + ", ".join(VARIANTS),
    )
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes, one round, servers started together (smoke test)")
    parser.add_argument("--json", metavar="OUT", help="write every figure and round as JSON")
    parser.add_argument(
        "--results", metavar="FILE",
        help=f"write the printed tables as Markdown to FILE (default: "
        f"{RESULTS.relative_to(RESULTS.parent.parent)}, only for a run with none of the options "
        "that select or size what is measured)",
    )
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    parser.add_argument("--ws", default="websockets-sansio",
                        choices=["websockets-sansio", "websockets", "wsproto"])
    parser.add_argument("--loop", default="auto", choices=["auto", "asyncio", "uvloop"])
    parser.add_argument("--compression", action="store_true",
                        help="clients offer permessage-deflate (off by default)")
    parser.add_argument("--phases", default=",".join(PHASES),
                        help=f"comma-separated subset of {','.join(PHASES)}")
    parser.add_argument(
        "--profile", metavar="DIR",
        help="attach py-spy to each server while it is loaded, write collapsed stacks to DIR "
        "and print tracer/ hot spots (timings of a profiled run are not comparable)",
    )
    parser.add_argument(
        "--profile-gil", action="store_true",
        help="with --profile: sample only the thread holding the GIL (py-spy --gil), i.e. "
        "Python work, leaving out time spent in system calls and waiting for a CPU",
    )
    parser.add_argument("--keep", metavar="DIR", help="keep databases, traces and logs in DIR")
    parser.add_argument("--live", action="store_true",
                        help="import the working tree as it is at each server start, instead of "
                        "a copy taken when the run starts")
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if the performance bar does not hold")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser.parse_args(argv)


def options_from(args: argparse.Namespace) -> Options:
    sizes = QUICK if args.quick else Sizes()
    overrides: dict[str, Any] = {}
    for name in ("rounds", "messages", "clients", "handshakes", "idle", "fanout", "fanout_size",
                 "warmup"):
        value = getattr(args, name)
        if value is not None:
            if value < (0 if name == "warmup" else 1):
                raise SystemExit(f"--{name.replace('_', '-')} must be positive")
            overrides[name] = value
    if args.profile:
        overrides.setdefault("rounds", 1)
        overrides.setdefault("idle", 100)  # allocation tracing makes each connection slow
        overrides.setdefault("handshakes", 300)
        # Longer windows: more samples in each phase's profile.
        overrides["echo_seconds"] = 6.0
        overrides["fanout_seconds"] = 3.0
        overrides["timeout"] = 120.0  # the profilers slow the server down a lot
    sizes = replace(sizes, **overrides)
    try:
        variants = resolve(args.variants)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    phases = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    unknown = [p for p in phases if p not in PHASES]
    if unknown or not phases:
        raise SystemExit(
            f"--phases: {', '.join(unknown) or 'none given'}: choose among {', '.join(PHASES)}"
        )
    return Options(
        variants=variants,
        sizes=sizes,
        http=args.http,
        ws=args.ws,
        loop=args.loop,
        compression=args.compression,
        parallel_start=args.quick,
        phases=phases,
        profile_dir=args.profile,
        profile_gil=args.profile_gil,
        keep=args.keep,
        snapshot=not args.live,
    )


def bench(options: Options, *, progress: bool = True, quick: bool = False) -> dict[str, Any]:
    """Run the benchmark; the raw rounds plus ``summary`` and ``bar`` (what ``--json`` holds)."""
    def say(message: str) -> None:
        if progress:
            print(message, file=sys.stderr, flush=True)

    raw = run(options, progress=say)
    raw["summary"] = report.summarize(raw)
    raw["bar"] = report.check_bar(raw["summary"])
    say("timing the span work of one message in this process (bench/floor.py)")
    raw["floor"] = floor.measure(count=500 if quick else 5000)
    say("timing the hooks of one message, stage by stage, in this process (bench/hooks.py)")
    raw["hooks"] = hooks.measure(messages=1800 if quick else 9000)
    say("timing the hooks of one connection's life, stage by stage, in this process")
    raw["connection_hooks"] = hooks.measure_connection(connections=600 if quick else 3000)
    return raw


_SELECTING = ("--variants", "--phases", "--http", "--ws", "--loop", "--compression", "--quick",
              "--profile", "--rounds", "--messages", "--clients", "--handshakes", "--idle",
              "--fanout", "--warmup")
"""Options that make a run partial or different: its figures must not replace the results file."""


def _full_run(args: argparse.Namespace, argv: list[str] | None) -> bool:
    """Whether this is the run ``make bench`` makes: only then is the results file rewritten
    by default (a partial run would leave it with "not run" rows)."""
    given = sys.argv[1:] if argv is None else argv
    return not any(arg.split("=", 1)[0] in _SELECTING for arg in given)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile and py_spy_path() is None:
        print("--profile samples the servers with py-spy, which is not installed: "
              "pip install -e '.[profile]'", file=sys.stderr)
        return 2
    options = options_from(args)
    result = bench(options, progress=not args.quiet, quick=args.quick)
    report.render(result, result["summary"], result["bar"])
    report.render_floor(result)
    report.render_hooks(result)
    report.render_handshake_split(result)
    if result["profiles"]:
        result["hotspots"] = profile.report_run(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str) + "\n")
    results = args.results or (RESULTS if _full_run(args, argv) else None)
    if results:
        report.write_results(results, result)
        print(f"results written to {results}", file=sys.stderr)
    if args.check and any(line["verdict"] == "FAIL" for line in result["bar"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
