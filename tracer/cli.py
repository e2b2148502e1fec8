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
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

if TYPE_CHECKING:
    from tracer.analysis.html import ExtraTab
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
    from tracer.analysis.perfetto import to_chrome_trace

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


# --- The HTML viewer ---------------------------------------------------------------------------


def _view_target(files: list[Path] | None) -> Path:
    """``run.otlp.jsonl`` → ``run.html`` beside it; a directory or several files: wstrace.html."""
    if files and len(files) == 1 and files[0].is_file():
        name = files[0].name
        stem = name[: -len(".otlp.jsonl")] if name.endswith(".otlp.jsonl") else files[0].stem
        return files[0].with_name(stem + ".html")
    return Path("wstrace.html")


def write_view(
    files: list[Path] | None, output: Path | None = None, *, walkthrough: int = 1
) -> Path:
    """Render the viewer page for ``files`` into ``output`` (default: beside the trace file),
    with connection ``walkthrough`` explained step by step in a tab of its own (0: no tab)."""
    from tracer.analysis.html import render_view

    traces = _load(files)
    sources = [str(f) for f in files or [DEFAULT_TRACES]]
    target = output or _view_target(files)
    tabs = [tab] if (tab := _walkthrough_tab(traces, walkthrough)) is not None else []
    page = render_view(
        traces, sources=sources, title=f"wstrace view — {', '.join(sources)}", tabs=tabs
    )
    try:
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        _fail(f"{target}: cannot write ({exc.strerror}); choose another path with -o")
    return target


def _walkthrough_tab(traces: TraceSet, number: int) -> ExtraTab | None:
    """The ``wstrace explain`` walkthrough of one connection, as a tab of the viewer."""
    from tracer.analysis.explain import STYLE, explain_html_fragment
    from tracer.analysis.html import ExtraTab

    if number <= 0 or not traces.connections:
        return None
    if number > len(traces.connections):
        _fail(f"--walkthrough {number}: the trace has {len(traces.connections)} connection(s)")
    return ExtraTab(
        "walkthrough",
        f"Walkthrough (connection {number})",
        explain_html_fragment(traces, number),
        style=STYLE,
    )


@app.command()
def view(
    files: FilesArg = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="The HTML file to write. Default: beside the trace file, .otlp.jsonl → .html "
            "(wstrace.html for a directory or several files).",
            show_default=False,
        ),
    ] = None,
    open_it: Annotated[
        bool, typer.Option("--open", help="Open the page in the default browser.")
    ] = False,
    walkthrough: Annotated[
        int,
        typer.Option(
            "--walkthrough",
            help="Explain this connection (1-based) step by step in a Walkthrough tab, as "
            "`wstrace explain` does; 0 for no tab.",
        ),
    ] = 1,
) -> None:
    """Write one self-contained HTML page to explore the traces in a browser.

    Offline and safe to share: no network access (a Content-Security-Policy forbids it), works
    from file://.  Shows the connections (sort and filter by handshake time, errors, close code,
    path), one connection's waterfall with zoom and pan (the ASGI middleware chain as one row
    that opens layer by layer, frames as ticks on receive/send lanes, each message's queue wait
    and handler time shaded apart), span details with the code location, the handshake stack
    grouped by package, a Wireshark-like frames table, the fan-out of each broadcast across
    connections, and latency percentiles with distributions.

    Examples: `wstrace view traces/run.otlp.jsonl` · `wstrace view traces/ -o all.html --open`
    """
    target = write_view(files, output, walkthrough=walkthrough)
    typer.echo(f"wrote {target} ({target.stat().st_size // 1024} KiB)", err=True)
    if open_it:
        import webbrowser

        webbrowser.open(target.resolve().as_uri())


# --- Commands that run a traced server ---------------------------------------------------------


class HttpImpl(str, Enum):
    auto = "auto"
    httptools = "httptools"
    h11 = "h11"
    zttp = "zttp"


class WsImpl(str, Enum):
    auto = "auto"
    websockets = "websockets"
    websockets_sansio = "websockets-sansio"
    wsproto = "wsproto"


class Shape(str, Enum):
    connection = "connection"
    message = "message"


class Frames(str, Enum):
    spans = "spans"
    events = "events"
    off = "off"


HttpOpt = Annotated[
    HttpImpl, typer.Option("--http", help="uvicorn's HTTP parser.", case_sensitive=False)
]
WsOpt = Annotated[
    WsImpl,
    typer.Option(
        "--ws",
        help="uvicorn's WebSocket implementation (websockets = the legacy protocol the "
        "classic walkthroughs describe; websockets-sansio = today's default).",
        case_sensitive=False,
    ),
]
ShapeOpt = Annotated[
    Shape,
    typer.Option(
        "--shape",
        help="connection: one trace per connection (teaching, debugging); message: one trace "
        "per received message, linked to the handshake (production).",
    ),
]
FramesOpt = Annotated[
    Frames,
    typer.Option("--frames", help="Each WebSocket frame as a span, as an event, or not at all."),
]
OutOpt = Annotated[
    Path, typer.Option("--out", help="Directory for the trace files (*.otlp.jsonl).")
]


def _where_to_look(path: Path) -> str:
    return (
        f"Trace file: {path}\n"
        f"  terminal:  wstrace show {path} --connection 2 --stack   |   wstrace stats {path}\n"
        f"  Perfetto:  wstrace export {path} -o demo.perfetto.json, then open it at "
        "https://ui.perfetto.dev\n"
        "  Jaeger / otel-tui / an OpenTelemetry Collector: the file is OTLP JSON Lines (the "
        "collector's otlpjsonfile receiver reads it as is); to stream instead, set "
        "OTEL_EXPORTER_OTLP_ENDPOINT=http://host:4318 and run again."
    )


def _export_summary(since: int) -> list[str]:
    """One line per output (file, collector) made after ``since``: spans written, dropped
    and why, failed."""
    from tracer.export.pipeline import stats as export_stats

    return [counts.summary() for counts in export_stats(since)]


def _terminate_as_interrupt() -> None:
    """SIGTERM ends the run as Ctrl-C does: the server stops, the spans are drained.  SIGINT
    does so even when this process was started with it ignored (a shell's background job), as
    it does for uvicorn, which sets its own handlers."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


@app.command()
def demo(
    http: HttpOpt = HttpImpl.httptools,
    ws: WsOpt = WsImpl.websockets_sansio,
    clients: Annotated[int, typer.Option(min=1, max=200, help="Bidders in the room.")] = 5,
    bids: Annotated[int, typer.Option(min=1, max=10000, help="Bids, made in turn.")] = 20,
    shape: ShapeOpt = Shape.connection,
    frames: FramesOpt = Frames.spans,
    out: OutOpt = DEFAULT_TRACES,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve", help="After the script, keep the app running for a browser until Ctrl-C."
        ),
    ] = False,
) -> None:
    """Trace a scripted auction end to end — the quickest way to see what wstrace records.

    Starts the auction app (FastAPI, SQLite) instrumented on a free loopback port; bidders
    join over WebSocket, bid in turn (every bid is broadcast to the whole room), chat, send
    one malformed message, and one client asks for an auction that does not exist.  Then it
    prints one connection's span tree and the latency of every stage, and tells you where the
    trace file is and how to open it elsewhere.
    """
    console = _console()
    _terminate_as_interrupt()
    from tracer.export.pipeline import serial

    pipelines_before = serial()
    path, outcome = _run_auction(console, http, ws, clients, bids, shape, frames, out, serve)
    _report_demo(console, path, outcome, pipelines_before)


def _run_auction(
    console: Console,
    http: HttpImpl,
    ws: WsImpl,
    clients: int,
    bids: int,
    shape: Shape,
    frames: Frames,
    out: Path,
    serve: bool,
) -> tuple[Path, dict[str, Any]]:
    """The scripted auction, with a progress bar (and, with ``--serve``, the app kept up)."""
    from rich.progress import BarColumn, Progress, TextColumn

    from tracer.demo import Script, run_demo

    with Progress(
        TextColumn("[bold]auction[/bold]"),
        BarColumn(),
        TextColumn("{task.description}"),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task("starting", total=bids + 5)

        def step(text: str) -> None:
            progress.update(task, advance=1, description=text)

        def keep_serving(running) -> None:  # type: ignore[no-untyped-def]
            import time

            progress.stop()
            console.print(f"Serving the traced auction at {running.http_url}/ — Ctrl-C to stop.")
            try:
                while True:
                    time.sleep(1)
            except KeyboardInterrupt:
                console.print("stopping")

        return run_demo(
            http=http.value,
            ws=ws.value,
            script=Script(clients=clients, bids=bids),
            shape=shape.value,
            frames=frames.value,
            out_dir=out,
            step=step,
            keep_serving=keep_serving if serve else None,
        )


def _report_demo(
    console: Console, path: Path, outcome: dict[str, Any], pipelines_before: int
) -> None:
    """One bidder's tree, the stage table, the export account, and where to look next."""
    from tracer._contain import errors
    from tracer.analysis.stats import compute_stats, stats_renderable
    from tracer.analysis.tree import TreeOptions, connection_tree
    from tracer.export.reader import load

    traces = load([path])
    console.print(
        f"{len(traces.connections)} connections, {len(traces.spans)} spans "
        f"(unknown auction refused with HTTP {outcome['refused_status']})"
    )
    if traces.connections:
        conn = traces.connection(min(2, len(traces.connections)))  # a bidder, not the refused
        console.print(connection_tree(traces, conn, TreeOptions()))
    console.print(stats_renderable(compute_stats(traces)))
    if errors.total:
        console.print(f"[yellow]wstrace contained {errors.total} internal errors: {errors.counts}")
    for line in _export_summary(pipelines_before):
        console.print(line, highlight=False, markup=False)
    console.print(_where_to_look(path), highlight=False, markup=False)
    shown = min(2, len(traces.connections))  # the connection whose tree is printed above
    page = write_view([path], walkthrough=shown)
    console.print(f"  Browser:   {page} (offline HTML, no network)", highlight=False, markup=False)
    if shown:
        console.print(
            f"  Step by step: wstrace explain {path} --connection {shown} (what RFC 6455 says "
            "at each step, and the code that did it)",
            highlight=False,
            markup=False,
        )


@app.command()
def serve(
    target: Annotated[
        str, typer.Argument(metavar="MODULE:APP", help="The ASGI app, e.g. demo_app.app:app")
    ],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    http: HttpOpt = HttpImpl.auto,
    ws: WsOpt = WsImpl.auto,
    shape: ShapeOpt = Shape.connection,
    frames: FramesOpt = Frames.spans,
    out: OutOpt = DEFAULT_TRACES,
    factory: Annotated[
        bool, typer.Option("--factory", help="MODULE:APP is a function that returns the app.")
    ] = False,
    app_dir: Annotated[
        Path,
        typer.Option(
            "--app-dir",
            metavar="<path>",
            help="Where MODULE is looked for first, as with uvicorn's --app-dir.",
        ),
    ] = Path("."),
    export_in_process: Annotated[
        bool,
        typer.Option(
            "--export-in-process",
            help="Encode and write spans in the server process instead of a helper process "
            "(slower for the server; one process less).",
        ),
    ] = False,
) -> None:
    """Serve any ASGI app under uvicorn with tracing on, until Ctrl-C.

    The server hooks are installed and the app is wrapped in TracingMiddleware; spans go to
    OTLP JSON Lines files under --out (and to a collector when OTEL_EXPORTER_OTLP_ENDPOINT is
    set).  A helper process encodes and writes them, so the server's event loop only pays for
    handing finished spans over.
    """
    import uvicorn
    from uvicorn.importer import ImportFromStringError, import_from_string

    import tracer
    from tracer.demo import PortInUse, check_port, make_provider

    sys.path.insert(0, str(app_dir))  # the console script's own folder is first otherwise
    try:
        asgi_app = import_from_string(target)
        if factory:
            asgi_app = asgi_app()
    except ImportFromStringError as exc:
        _fail(f"{target}: {exc}; give it as MODULE:ATTRIBUTE, e.g. demo_app.app:app")
    except Exception as exc:
        _fail(f"{target}: the app factory failed ({type(exc).__name__}: {exc})")
    try:
        check_port(host, port)
    except PortInUse as exc:
        _fail(str(exc))
    from tracer.export.pipeline import serial

    pipelines_before = serial()
    provider, exporter = make_provider(out, service=target, offload=not export_in_process)
    tracer.instrument(tracer_provider=provider, shape=shape.value, frames=frames.value)
    _terminate_as_interrupt()  # uvicorn passes SIGTERM on once it has shut down
    try:
        uvicorn.run(
            tracer.TracingMiddleware(asgi_app, tracer_provider=provider),
            host=host,
            port=port,
            http=http.value,
            ws=ws.value,
        )
    finally:
        tracer.uninstrument()
        provider.shutdown()
        for line in _export_summary(pipelines_before):
            typer.echo(line, err=True)
        typer.echo(f"traces written to {exporter.path}", err=True)


@app.command()
def samples(
    out: Annotated[Path, typer.Option("--out", help="Where the samples live.")] = (
        DEFAULT_TRACES / "samples"
    ),
) -> None:
    """Regenerate the committed sample traces: the demo scenario on each WebSocket library."""
    from tracer.demo import SAMPLE_WS, write_sample

    for ws in SAMPLE_WS:
        path = write_sample(out, ws, step=lambda _: None)
        typer.echo(f"wrote {path}")


# --- wstrace explain: the walkthrough of one connection ---------------------------------------


class ExplainFormat(str, Enum):
    md = "md"
    html = "html"


@app.command()
def explain(
    file: Annotated[
        Path | None,
        typer.Argument(
            metavar="[FILE]",
            help="A trace file (*.otlp.jsonl) or a directory of them. Default: run the demo "
            "scenario now, with payload capture on.",
            show_default=False,
        ),
    ] = None,
    connection: Annotated[
        int, typer.Option("--connection", "-c", min=1, help="Which connection (1 = first).")
    ] = 1,
    fmt: Annotated[
        ExplainFormat,
        typer.Option(
            "--format", "-f", help="md: GitHub Markdown; html: a page.", case_sensitive=False
        ),
    ] = ExplainFormat.md,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write here instead of stdout.", show_default=False),
    ] = None,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare",
            help="Run the scenario on every WebSocket implementation and HTTP parser and put "
            "them side by side.",
        ),
    ] = False,
    http: Annotated[
        HttpImpl, typer.Option("--http", help="Parser for the scenario run (no FILE).")
    ] = HttpImpl.httptools,
    ws: Annotated[
        WsImpl,
        typer.Option("--ws", help="WebSocket implementation for the scenario run (no FILE)."),
    ] = WsImpl.websockets_sansio,
) -> None:
    """Explain one WebSocket connection step by step: course material on WebSocket internals.

    For each stage — the request, the header parse, the upgrade, the protocol switch, the
    opening handshake (Sec-WebSocket-Accept recomputed from the key), the ASGI app and each
    middleware, the route, accept() and the stack at that moment, the first frame decoded bit
    by bit, the message, the broadcast, the close — it says what RFC 6455 / RFC 9110 say,
    where the code is in the installed packages (file:line, version, source lines) and how
    long the step took.

    Examples:

    - `wstrace explain -o walkthrough.md` — run the demo scenario and explain connection 1
    - `wstrace explain traces/run.otlp.jsonl -c 3 -f html -o conn3.html`
    - `wstrace explain --compare -o compare.md` — every implementation side by side
    """
    from tracer.analysis.explain import explain as build
    from tracer.analysis.explain import to_html_page, to_markdown

    if compare and file is not None:
        raise typer.BadParameter("--compare runs the scenario itself: give no FILE")
    if compare:
        from tracer.walkthrough import compare_document

        doc = compare_document()
    elif file is None:
        from tracer.walkthrough import scenario_document

        if http is HttpImpl.auto or ws is WsImpl.auto:
            raise typer.BadParameter("choose a named --http and --ws for the scenario run")
        doc = scenario_document(http.value, ws.value, connection)
    else:
        traces = _load([file])
        try:
            doc = build(traces, connection)
        except LookupError as exc:
            _fail(str(exc.args[0]) if exc.args else str(exc))
    text = to_html_page(doc) if fmt is ExplainFormat.html else to_markdown(doc)
    if output is None or str(output) == "-":
        sys.stdout.write(text)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(f"{output}: cannot write ({exc.strerror}); choose another path with -o")
    typer.echo(f"wrote {output}", err=True)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
