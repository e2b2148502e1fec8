"""The ``wstrace`` command line: a thin shell over :mod:`tracer.export` and :mod:`tracer.analysis`.

Expected failures (a missing or malformed trace file, an unknown connection or trace id, an
unwritable output) print one line on stderr — what is wrong and what to do — and exit with
status 1; usage mistakes exit with 2.  No traceback is shown for either.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from tracer.export.traceset import TraceSet

app = typer.Typer(
    help=(
        "Trace WebSocket connections on uvicorn + FastAPI/Starlette, and read the traces.\n\n"
        "Traces are OTLP JSON Lines files (*.otlp.jsonl, written under traces/ by default); "
        "every reading command takes files or directories of them."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

DEFAULT_TRACES = Path("traces")
FilesArg = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="[FILE]...",
        help="Trace files (*.otlp.jsonl) or directories of them. Default: traces/",
        show_default=False,
    ),
]


def _fail(message: str) -> NoReturn:
    """One line on stderr, exit status 1 — for errors the user can fix."""
    typer.echo(f"wstrace: error: {message}", err=True)
    raise typer.Exit(1)


def _console(wide: bool = False) -> Console:
    """Rich console; ``wide``: when not a terminal, never cut lines (a file or a pager)."""
    console = Console(highlight=False)
    if wide and not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(highlight=False, width=10_000)
    return console


def _load(files: list[Path] | None) -> TraceSet:
    """Read the files (imported lazily: ``wstrace --help`` stays fast)."""
    from tracer.export.reader import TraceFileError, load

    try:
        traces = load(files or [DEFAULT_TRACES])
    except TraceFileError as exc:
        _fail(str(exc))
    if not traces.spans:
        names = ", ".join(str(f) for f in files or [DEFAULT_TRACES])
        _fail(f"{names}: no spans in the file(s); trace some connections first")
    return traces


@app.command()
def version() -> None:
    """Print the installed version."""
    from importlib.metadata import version as dist_version

    typer.echo(dist_version("wstrace"))


@app.command()
def show(
    files: FilesArg = None,
    connection: Annotated[
        int | None,
        typer.Option(
            "--connection",
            "-c",
            min=1,
            help="Which connection: 1 is the first to connect (connections are numbered by "
            "start time). Default: 1.",
            show_default=False,
        ),
    ] = None,
    trace: Annotated[
        str | None,
        typer.Option(
            "--trace",
            "-t",
            help="Show one trace by id (or a unique prefix of 4+ "
            "hex digits), e.g. a message trace in the 'message' shape.",
        ),
    ] = None,
    depth: Annotated[
        int,
        typer.Option("--depth", "-d", min=0, max=200, help="Levels shown below the root."),
    ] = 40,
    stack: Annotated[
        bool,
        typer.Option(
            "--stack",
            help="Also list the Python stack recorded when the app's "
            "accept() reached the server (function, file:line, outermost first).",
        ),
    ] = False,
    frames: Annotated[
        bool, typer.Option("--frames/--no-frames", help="Show each WebSocket frame.")
    ] = True,
) -> None:
    """Show one connection as a span tree.

    Each line: the stage (span name), its duration, a bar placing it on the connection's
    timeline, the file:line of the installed code that did the work, and the stage's key
    fields — frame header bits (FIN / opcode / MASK / payload length), the 101 and its
    Sec-WebSocket-Accept check, queue wait vs handler time, broadcast recipients, close code
    and reason.  ◆ marks events: frames recorded as events, protocol errors, the stack.

    Examples:

    - `wstrace show` — the first connection in the files under traces/
    - `wstrace show traces/run.otlp.jsonl -c 2 --stack` — the second, with the stack table
    - `wstrace show run.otlp.jsonl --trace 0af7 --depth 3 --no-frames` — one trace, trimmed
    """
    from tracer.analysis.tree import TreeOptions, connection_tree, handshake_stack, trace_tree

    if connection is not None and trace is not None:
        raise typer.BadParameter("give --connection or --trace, not both")
    traces = _load(files)
    options = TreeOptions(depth=depth, frames=frames)
    console = _console(wide=True)
    try:
        if trace is not None:
            trace_id = traces.find_trace(trace)
            console.print(trace_tree(traces, trace_id, options))
            spans = traces.traces[trace_id]
        else:
            conn = traces.connection(connection or 1)
            console.print(connection_tree(traces, conn, options))
            spans = conn.spans
    except LookupError as exc:
        _fail(str(exc.args[0]) if exc.args else str(exc))
    if stack:
        console.print()
        console.print(handshake_stack(traces, spans))


@app.command()
def stats(
    files: FilesArg = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON (nanoseconds) instead of tables.")
    ] = False,
) -> None:
    """Latency percentiles per stage, across every connection in the files.

    For each span name: count, p50, p90, p99 and max duration (milliseconds with 3 decimals;
    nanoseconds with --json).  Percentiles use the nearest-rank method: the p-th percentile of
    n sorted durations is the one at rank ceil(p/100 × n) — always a measured value.

    Also: fan-out latency per broadcast (the triggering message's first frame arriving → the
    last recipient's frame written: what the other clients wait), and queue wait vs handler
    time of received messages (a message waiting for the app to call receive() is a different
    problem from a slow handler).
    """
    from tracer.analysis.stats import compute_stats, stats_renderable

    result = compute_stats(_load(files))
    if as_json:
        typer.echo(json.dumps(result.to_json(), indent=2, allow_nan=False))
    else:
        _console().print(stats_renderable(result))


class ExportFormat(str, Enum):
    perfetto = "perfetto"


@app.command()
def export(
    files: FilesArg = None,
    fmt: Annotated[
        ExportFormat,
        typer.Option(
            "--format", "-f", help="perfetto: Chrome Trace Event JSON.", case_sensitive=False
        ),
    ] = ExportFormat.perfetto,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Output file ('-' for stdout). Default: wstrace.perfetto.json",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Convert traces for other viewers.

    perfetto: Chrome Trace Event JSON — open it at https://ui.perfetto.dev (or
    chrome://tracing, speedscope).  One track per connection (named 'conn N address:port
    path'; an extra track 'conn N … (2)' holds spans that overlap others), frames as instant
    events carrying Wireshark's field names, and an arrow from each broadcast to every
    recipient's send, drawn on the recipient's track where it fits.
    """
    from tracer.export.perfetto import to_chrome_trace

    data = to_chrome_trace(_load(files))
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if output is not None and str(output) == "-":
        sys.stdout.write(text + "\n")
        return
    target = output or Path(f"wstrace.{fmt.value}.json")
    try:
        target.write_text(text + "\n", encoding="utf-8")
    except OSError as exc:
        _fail(f"{target}: cannot write ({exc.strerror}); choose another path with -o")
    slices = sum(1 for e in data["traceEvents"] if e["ph"] == "X")
    tracks = sum(1 for e in data["traceEvents"] if e.get("name") == "thread_name")
    typer.echo(
        f"wrote {target}: {slices} slices on {tracks} tracks — open it at https://ui.perfetto.dev",
        err=True,
    )


# Commands that run things (``demo``, ``serve``, ``samples``) are registered here by their
# own modules; the reading commands above only depend on tracer.export / tracer.analysis.


def main() -> None:
    app()
