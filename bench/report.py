"""Medians, ratios to the untraced server, the performance bar, and the table.

Most figures are the **median over rounds** of the variant's per-round value, and their
**ratio** is the median over rounds of (variant ÷ untraced *in the same round*): the rounds
interleave the variants, so pairing them by round cancels most of the machine's drift.
Handshake percentiles and memory per idle connection are **pooled**: computed over the samples
of all rounds together (the rounds share the 500 handshakes and 500 idle connections), then
compared with the untraced server's pooled figure.  Memory is compared as a **delta**
(variant − untraced, KiB per connection), everything else as a ratio.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.load import percentile
from bench.variants import BAR, BASELINE, VARIANTS

FIGURES: dict[str, tuple[str, str]] = {
    # key: (how it compares to untraced, what it is)
    "cpu_per_msg_us": ("ratio", "server CPU µs per echoed message"),
    "export_cpu_per_msg_us": ("value", "span export process CPU µs per echoed message"),
    "writer_cpu_per_msg_us": ("value", "of the server's, its span-export threads' µs per message"),
    "gc_per_msg_us": ("value", "of the server's, µs per message in its garbage collector"),
    "total_cpu_per_msg_us": ("ratio", "server + span export process CPU µs per message"),
    "msg_per_s": ("ratio", "echoed messages per second"),
    "handshake_ms_p50": ("ratio", "handshake latency p50, ms"),
    "handshake_ms_p99": ("ratio", "handshake latency p99, ms"),
    "handshake_cpu_us": ("ratio", "server CPU µs per connect + greeting + close"),
    "handshake_gc_us": ("value", "of the server's, µs per connection in its garbage collector"),
    "handshake_answer_us_p50": ("ratio", "server µs from a connection's arrival to its 101, p50"),
    "idle_kib_per_conn": ("delta", "server RSS KiB per idle open connection"),
    "fanout_ms_p50": ("ratio", "one bid to the last of N bidders, ms (p50)"),
    "fanout_ms_p99": ("ratio", "one bid to the last of N bidders, ms (p99)"),
    "fanout_cpu_us": ("ratio", "server CPU µs per fan-out"),
}

POOLED = ("handshake_ms_p50", "handshake_ms_p99", "handshake_answer_us_p50", "idle_kib_per_conn")
"""Figures computed over all rounds' samples at once: the bar asks for percentiles over at
least 500 handshakes and memory over at least 500 connections, which the rounds share."""

_GC_FIGURES = (("gc_per_msg_us", 1, "msg"), ("handshake_gc_us", 0, "connection"))
"""Time in the garbage collector: figure, digits shown, per what."""


BAR_FIGURE = {"cpu_per_msg": "cpu_per_msg_us", "total_cpu_per_msg": "total_cpu_per_msg_us",
              "handshake_p50": "handshake_ms_p50", "idle_kib": "idle_kib_per_conn"}


def _median(values: list[float]) -> float:
    clean = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
    return statistics.median(clean) if clean else math.nan


_POOLED_SAMPLES = {
    "handshake_ms_p50": ("handshake_ms", 50),
    "handshake_ms_p99": ("handshake_ms", 99),
    "handshake_answer_us_p50": ("handshake_answer_us", 50),
}
"""A pooled percentile: the round's samples it is taken over, and which percentile."""


def _pooled(key: str, results: list[dict[str, Any]]) -> float:
    """A figure computed over every round's samples together."""
    if key == "idle_kib_per_conn":
        rounds = [r for r in results if "idle_rss_after" in r]
        connections = sum(r["idle"] for r in rounds)
        grown = sum(r["idle_rss_after"] - r["idle_rss_before"] for r in rounds)
        return grown / connections / 1024.0 if connections else math.nan
    samples_key, at = _POOLED_SAMPLES[key]
    samples = [x for r in results for x in r.get(samples_key, ())]
    return percentile(samples, at)


def _paired(key: str, mode: str, results: list[dict[str, Any]],
            base_by_round: dict[int, dict[str, Any]]) -> list[float]:
    """Each round's ratio (or difference) to the untraced server of the same round."""
    paired = []
    for result in results:
        base_result = base_by_round.get(result["round"])
        if base_result is None:
            continue
        if key in POOLED:  # the pooled figure of this round alone
            v, b = _pooled(key, [result]), _pooled(key, [base_result])
            if not (math.isfinite(v) and math.isfinite(b)):
                continue
        else:
            v, b = result.get(key), base_result.get(key)
            if v is None or b is None:
                continue
        v, b = float(v), float(b)
        paired.append((v / b if b else math.nan) if mode == "ratio" else v - b)
    return paired


def summarize(raw: dict[str, Any]) -> dict[str, Any]:
    """``{variant: {figure: {"value", "ratio" | "delta", "how", "rounds", "paired"}}}`` from a
    run; ``paired``: each round's ratio or difference to untraced, however the figure itself
    is computed (its spread says how much the machine moved the figure)."""
    rounds: dict[str, list[dict[str, Any]]] = raw["rounds"]
    base_results = rounds.get(BASELINE, [])
    base_by_round = {r["round"]: r for r in base_results}
    summary: dict[str, Any] = {}
    for variant, results in rounds.items():
        figures: dict[str, Any] = {}
        for key, (mode, _text) in FIGURES.items():
            per_round = [float(r[key]) for r in results if key in r]
            entry: dict[str, Any] = {"rounds": per_round}
            paired = _paired(key, mode, results, base_by_round) if mode != "value" else []
            entry["paired"] = paired
            if key in POOLED:
                entry["how"] = "pooled over rounds"
                value = _pooled(key, results)
                base = _pooled(key, base_results) if base_results else math.nan
                compared = (value / base if base else math.nan) if mode == "ratio" else value - base
                entry["value"] = value
                entry[mode] = compared if math.isfinite(compared) else None
            else:
                entry["how"] = "median over rounds"
                entry["value"] = _median(per_round)
                if mode != "value":
                    entry[mode] = _median(paired) if paired else None
            figures[key] = entry
        figures["errors"] = sum(len(r.get("errors", [])) for r in results)
        figures["trace_bytes"] = _median([float(r.get("trace_bytes", 0)) for r in results])
        summary[variant] = figures
    return summary


def check_bar(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each line of the bar: the measured ratio or delta, the limit, and whether it holds."""
    lines = []
    for bar in BAR:
        figure = BAR_FIGURE[bar.figure]
        entry = summary.get(bar.variant, {}).get(figure)
        measured = None if entry is None else entry.get(bar.mode)
        rounds = [x for x in (entry or {}).get("paired", ()) if math.isfinite(x)]
        if measured is None or not math.isfinite(measured):
            verdict = "not run"
        else:
            verdict = "PASS" if measured <= bar.limit else "FAIL"
        lines.append({
            "text": bar.text, "variant": bar.variant, "figure": figure, "mode": bar.mode,
            "limit": bar.limit, "measured": measured, "verdict": verdict,
            "spread": (min(rounds), max(rounds)) if len(rounds) > 1 else None,
        })
    return lines


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or not math.isfinite(value):
        return "—"
    return f"{value:,.{digits}f}"


def _window(count: int, seconds: float, what: str) -> str:
    """A measuring window as it was sized: so many ``what``, or at least that and so long."""
    return f"{count:,} {what}" if not seconds else f"≥ {count:,} {what} and ≥ {seconds:g} s"


def _ratio(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.2f}×"


def _delta(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:+.1f}"


def _cell(figures: dict[str, Any], key: str, digits: int) -> str:
    entry = figures[key]
    if "ratio" not in entry and "delta" not in entry:
        return _fmt(entry["value"], digits)
    if "delta" in entry:
        return f"{_fmt(entry['value'], digits)}  {_delta(entry['delta'])}"
    return f"{_fmt(entry['value'], digits)}  {_ratio(entry['ratio'])}"


def render(raw: dict[str, Any], summary: dict[str, Any], bar: list[dict[str, Any]],
           console: Any = None) -> None:
    """Print the figures table, the bar and the notes with rich."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
    sizes = raw["options"]["sizes"]
    m = raw["machine"]
    console.print(
        f"[bold]wstrace overhead benchmark[/] — {sizes['rounds']} round(s), "
        f"{m['cpus']} CPU(s) {m['cpu_model']}, Python {m['python']}, "
        f"uvicorn {m['versions'].get('uvicorn')} ({raw['options']['http']} + "
        f"{raw['options']['ws']}, loop {raw['options']['loop']}), "
        f"{raw['elapsed_s']:.0f} s; source {m.get('source', '?')}"
        + (" (copied at start)" if m.get("snapshot") else " (live tree)")
    )
    loads = [x for rs in raw["rounds"].values() for r in rs for x in r.get("loadavg", ())]
    if loads:
        console.print(
            f"machine load (1-min average) around the measurements: {min(loads):.2f} – "
            f"{max(loads):.2f} on {m['cpus']} CPU(s) (the benchmark itself keeps about 2 busy)"
        )
    console.print(
        "per variant and round: echo "
        f"{_window(sizes['messages'], sizes['echo_seconds'], 'messages')} over "
        f"{sizes['clients']} one-client rooms; fan-out "
        f"{_window(sizes['fanout'], sizes['fanout_seconds'], 'bids')} to {sizes['fanout_size']} "
        f"bidders; per variant in all: {sizes['handshakes']} handshakes, {sizes['idle']} "
        "idle connections."
        + ("" if raw["options"].get("profile_dir") else
           " Echo and handshakes: every variant's server driven in turn, in short slices.")
        + "\nEach cell: value, then ratio to untraced (median of per-round "
        "ratios; handshakes and memory pooled over rounds) or, for memory, KiB more than "
        "untraced."
    )
    table = Table(header_style="bold")
    table.add_column("variant")
    for title in ("CPU µs/msg", "export proc µs/msg", "server+export µs/msg", "msg/s",
                  "handshake p50 ms", "handshake p99 ms", "KiB/idle conn",
                  f"fan-out to {sizes['fanout_size']} ms", "CPU µs/fan-out"):
        table.add_column(title, justify="right")
    for variant, f in summary.items():
        table.add_row(
            variant,
            _cell(f, "cpu_per_msg_us", 1),
            _cell(f, "export_cpu_per_msg_us", 1),
            _cell(f, "total_cpu_per_msg_us", 1),
            _cell(f, "msg_per_s", 0),
            _cell(f, "handshake_ms_p50", 2),
            _cell(f, "handshake_ms_p99", 2),
            _cell(f, "idle_kib_per_conn", 1),
            _cell(f, "fanout_ms_p50", 2),
            _cell(f, "fanout_cpu_us", 0),
        )
    console.print(table)

    render_bar(bar, console)
    render_noise(summary, console)

    exporters = {n["exporter"] for n in raw["notes"].values() if "exporter" in n}
    if exporters:
        console.print("span export: " + "; ".join(sorted(exporters)))
    for variant, f in summary.items():
        extra = [f"handshake CPU {_fmt(f['handshake_cpu_us']['value'], 0)} µs "
                 f"({_ratio(f['handshake_cpu_us']['ratio'])})",
                 f"trace written {_fmt(f['trace_bytes'] / 1024, 0)} KiB/round"]
        writer = f.get("writer_cpu_per_msg_us", {}).get("value")
        if isinstance(writer, (int, float)) and math.isfinite(writer) and writer > 0:
            extra.append(f"span-export threads {_fmt(writer, 1)} µs/msg of the server's CPU")
        collecting = []
        for key, digits, unit in _GC_FIGURES:
            value = f.get(key, {}).get("value")
            if isinstance(value, (int, float)) and math.isfinite(value):
                collecting.append(f"{_fmt(value, digits)} µs/{unit}")
        if collecting:
            extra.append("garbage collector " + ", ".join(collecting))
        if f["errors"]:
            extra.append(f"[red]{f['errors']} unexpected replies[/]")
        note = raw["notes"].get(variant, {})
        label = VARIANTS[variant].label if variant in VARIANTS else variant
        details = str(note["middleware"]) if "middleware" in note else ""
        native = "native telemetry " + ("ON" if note.get("native_tracing") else "off") + \
            f" ({note.get('native_telemetry', '?')})"
        console.print(f"  [bold]{variant}[/]: {label}; {native}; "
                      + "; ".join(extra) + (f"; {details}" if details else ""))


def render_bar(bar: list[dict[str, Any]], console: Any) -> None:
    """The bar's table: each criterion's figure, the spread of its rounds, the limit and the
    verdict (a figure over its limit by less than the rounding shows one more digit)."""
    from rich.table import Table

    bar_table = Table(title="performance bar (bench/variants.py BAR)", header_style="bold")
    bar_table.add_column("criterion")
    bar_table.add_column("measured", justify="right")
    bar_table.add_column("rounds: lowest – highest", justify="right")
    bar_table.add_column("limit", justify="right")
    bar_table.add_column("verdict")
    for line in bar:
        fmt = _ratio if line["mode"] == "ratio" else (lambda v: f"{_delta(v)} KiB")
        limit = f"{line['limit']:.2f}×" if line["mode"] == "ratio" else f"+{line['limit']:.0f} KiB"
        colour = {"PASS": "green", "FAIL": "red"}.get(line["verdict"], "yellow")
        spread = line.get("spread")
        rounds = f"{fmt(spread[0])} – {fmt(spread[1])}" if spread else "—"
        measured = fmt(line["measured"])
        if line["mode"] == "ratio" and measured == limit and line["verdict"] == "FAIL":
            measured = f"{line['measured']:.3f}×"  # over the limit by less than the rounding
        bar_table.add_row(line["text"], measured, rounds, limit,
                          f"[{colour}]{line['verdict']}[/]")
    console.print(bar_table)


NOISE_VARIANT = "untraced-twin"
"""The untraced app again, in servers of its own: what it differs from ``untraced`` by is the
run's own noise."""


def render_noise(summary: dict[str, Any], console: Any) -> None:
    """What two identical servers differed by in this run (when the twin ran): the bar's
    figures are no truer than that."""
    twin = summary.get(NOISE_VARIANT)
    if not twin:
        return
    parts = []
    for key, what in (("cpu_per_msg_us", "server CPU per message"),
                      ("handshake_ms_p50", "handshake p50")):  # fmt: skip
        entry = twin.get(key, {})
        paired = [x for x in entry.get("paired", ()) if math.isfinite(x)]
        if entry.get("ratio") is None or not paired:
            continue
        parts.append(f"{what} {_ratio(entry['ratio'])} (rounds {_ratio(min(paired))} – "
                     f"{_ratio(max(paired))})")  # fmt: skip
    if parts:
        console.print(
            f"noise: {NOISE_VARIANT}, the same untraced app in servers of its own, against "
            f"untraced: {'; '.join(parts)}.  A ratio above differs from the truth by about as "
            "much."
        )


def render_floor(raw: dict[str, Any], console: Any = None) -> None:
    """The span work of one message timed alone (``bench/floor.py``), against the bar's budget:
    a quarter of the untraced server's CPU per message."""
    figures = raw.get("floor")
    if not figures:
        return
    from rich.console import Console

    if console is None:
        console = Console()
    base = raw.get("summary", {}).get(BASELINE, {}).get("cpu_per_msg_us", {}).get("value")
    budget = f"; the 1.25× budget is {0.25 * base:.0f} µs" if base and math.isfinite(base) else ""
    facts = ""
    if "build_facts_us" in figures:
        built, pickled = figures["build_facts_us"], figures["pickle_facts_us"]
        facts = (
            f"; as one family fact (wstrace serve's set-up when the SpanLimits could cut a "
            f"message's spans; with the SDK's defaults it goes as a template, timed with the "
            f"hooks below): build {built:.1f} µs + pickle {pickled:.1f} µs = "
            f"{built + pickled:.1f} µs"
        )
    console.print(
        "span work alone, per message of 5 spans (bench/floor.py, best of 5): spans built in "
        f"the server: build {figures['build_us']:.1f} µs + pickle for the export process "
        f"{figures['pickle_us']:.1f} µs = {figures['build_us'] + figures['pickle_us']:.1f} µs "
        f"(encoding OTLP/JSON in the server instead: {figures['encode_us']:.1f} µs)"
        f"{facts}{budget}"
    )


def render_hooks(raw: dict[str, Any], console: Any = None) -> None:
    """What wstrace does per echoed message, stage by stage, timed alone in this process
    (``bench/hooks.py``), beside what the server measured: the difference is what a tight
    loop leaves out (cold caches between requests, the export writer thread's share)."""
    figures = raw.get("hooks")
    if not figures:
        return
    from rich.console import Console

    from bench.hooks import STAGES

    if console is None:
        console = Console()
    total = sum(figures[name] for name in STAGES)
    stages = ", ".join(f"{name} {figures[name]:.1f}" for name in STAGES)
    summary = raw.get("summary", {})
    measured = ""
    split = _split(summary, "cpu_per_msg_us")
    if split is not None:
        extra, recording = split
        measured = f"; in the server, conn-spans costs {extra:.1f} µs/msg more than untraced"
        if recording is not None:
            # conn-discard records the same spans and drops them: the rest is the hand-over.
            measured += (
                f", of which {recording:.1f} recording the spans (conn-discard) and "
                f"{extra - recording:.1f} handing them to the export process"
            )
            collecting = _split(summary, "gc_per_msg_us")
            if collecting is not None and collecting[1] is not None:
                measured += (
                    f"; of the recording, {collecting[1]:.1f} more in the garbage collector, "
                    f"{total:.1f} the hooks' own code (as timed alone), and "
                    f"{recording - collecting[1] - total:.1f} neither: the hooks and the "
                    "server's own code run slower side by side than alone"
                )
    console.print(
        f"hooks per echoed message, connection shape, spans as facts (bench/hooks.py, medians, "
        f"the message spans' a mean over their batches, µs): {stages}; total {total:.1f} µs"
        f"{measured}"
    )


def render_handshake_split(raw: dict[str, Any], console: Any = None) -> None:
    """What the connection shape adds to a handshake, split as for messages: recording the
    spans (conn-discard) and handing them on, in latency and in the server's CPU for the
    whole connect, greeting and close that the latency loop runs."""
    summary = raw.get("summary", {})
    latency = _split(summary, "handshake_ms_p50")
    cpu = _split(summary, "handshake_cpu_us")
    if latency is None or cpu is None:
        return
    if console is None:
        from rich.console import Console

        console = Console()
    parts = []
    for (extra, recording), unit, digits in ((latency, "ms", 2), (cpu, "µs", 0)):
        text = f"+{extra:.{digits}f} {unit}"
        if recording is not None:
            text += (f" (recording {recording:+.{digits}f}, handing on "
                     f"{extra - recording:+.{digits}f})")
        parts.append(text)
    console.print(
        f"handshakes, connection shape against untraced: p50 latency {parts[0]}"
        f"{_before_answer(summary)}; server CPU per connection (connect, greeting, close) "
        f"{parts[1]}{_connection_hooks(raw)}"
    )


def _before_answer(summary: dict[str, Any]) -> str:
    """How much of the added latency the server spends before its 101 is written: the hooks
    that run after it (the handshake's spans, the greeting, the close) cost CPU, not this."""
    split = _split(summary, "handshake_answer_us_p50")
    if split is None:
        return ""
    base = summary[BASELINE]["handshake_answer_us_p50"]["value"]
    return (
        f", of which the server's own time from the connection's arrival to the write of its "
        f"101 (p50) {split[0]:+.0f} µs ({base:.0f} → {base + split[0]:.0f} µs)"
    )


def _connection_hooks(raw: dict[str, Any]) -> str:
    """The hooks' own code over a connection's life, timed alone (``bench/hooks.py``)."""
    figures = raw.get("connection_hooks")
    if not figures:
        return ""
    from bench.hooks import CONNECTION_STAGES

    total = sum(figures[name] for name in CONNECTION_STAGES)
    stages = ", ".join(f"{name} {figures[name]:.0f}" for name in CONNECTION_STAGES)
    return (
        f"; of the recording, {total:.0f} µs is the hooks' own code as timed alone "
        f"(bench/hooks.py, medians, µs: {stages}; the HTTP layer's hooks and the middleware's "
        "set-up not included)"
    )


def _split(summary: dict[str, Any], key: str) -> tuple[float, float | None] | None:
    """conn-spans' ``key`` over untraced's, and conn-discard's (the spans recorded and
    dropped: what recording costs), or None if the run lacks the figures."""

    def value(variant: str) -> float | None:
        figure = summary.get(variant, {}).get(key, {}).get("value")
        return figure if isinstance(figure, (int, float)) and math.isfinite(figure) else None

    base, traced, discarded = value(BASELINE), value("conn-spans"), value("conn-discard")
    if base is None or traced is None:
        return None
    return traced - base, (discarded - base if discarded is not None else None)


RESULTS_HEADER = """\
# Benchmark results

Written by `make bench` (`python -m bench`); every run overwrites it, so these are the figures
of the last full run and nothing here is edited by hand.  How each figure is measured, and what
bounds the connection shape: [README.md](README.md).

"""


def write_results(path: Any, raw: dict[str, Any]) -> None:
    """Write what :func:`render`, :func:`render_floor`, :func:`render_hooks` and
    :func:`render_handshake_split` print, as Markdown, to ``path``.

    The printed tables are the one source of the figures: the file holds them verbatim, with
    the commit they measured, so the README can point here instead of repeating numbers.
    """
    import datetime
    import io
    from pathlib import Path

    from rich.console import Console

    console = Console(file=io.StringIO(), record=True, width=200, color_system=None)
    render(raw, raw["summary"], raw["bar"], console=console)
    render_floor(raw, console=console)
    render_hooks(raw, console=console)
    render_handshake_split(raw, console=console)
    text = console.export_text(styles=False)
    commit = raw["machine"].get("source", "unknown")  # as it was when the run copied the code
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    Path(path).write_text(
        RESULTS_HEADER + f"Run of {when}, commit `{commit}`.\n\n```text\n{text.rstrip()}\n```\n",
        encoding="utf-8",
    )
