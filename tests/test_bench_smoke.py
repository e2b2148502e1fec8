"""Smoke run of the overhead benchmark (``python -m bench --quick``) and its arithmetic.

No assertion here is about speed: the smoke run checks that every variant ran against a real
server process, that every figure came out finite and that the ratios to the untraced server
were computed; timings themselves are the business of ``make bench``.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import profile, report
from bench.interleave import ECHO_SLICE, SLICE, slices
from bench.load import percentile, share
from bench.runner import merge_round, round_order
from bench.variants import BAR, BASELINE, DEFAULT_VARIANTS, VARIANTS, resolve

ROOT = Path(__file__).resolve().parent.parent
UVLOOP = importlib.util.find_spec("uvloop")
"""uvicorn's loop when installed: its transports cannot carry the bench's 101 probe."""

POSITIVE = (
    "cpu_per_msg_us",
    "msg_per_s",
    "handshake_ms_p50",
    "handshake_ms_p99",
    "handshake_cpu_us",
    "fanout_ms_p50",
    "fanout_ms_p99",
    "fanout_cpu_us",
)


def _positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    where = tmp_path_factory.mktemp("bench")
    out, results = where / "bench.json", where / "RESULTS.md"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--quiet", "--json", str(out),
         "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "performance bar" in proc.stdout
    raw = json.loads(out.read_text())
    raw["results_md"] = results.read_text(encoding="utf-8")
    return raw


def test_the_results_file_holds_what_was_printed(quick_run: dict) -> None:
    text = quick_run["results_md"]
    assert text.startswith("# Benchmark results")
    # The commit the run measured, as the run's first line names it (the code it copied).
    source = quick_run["machine"]["source"]
    assert f"commit `{source}`" in text and f"source {source}" in " ".join(text.split())
    assert "performance bar" in text and "span work alone" in text
    assert "hooks per echoed message" in text
    assert "handshakes, connection shape against untraced: p50 latency" in text
    assert "(recording " in text  # split with conn-discard, one of the default variants
    flat = " ".join(text.split())  # (a long line may wrap anywhere)
    if UVLOOP is None:
        assert "the server's own time from the connection's arrival to the write of its 101" in flat
    assert "µs is the hooks' own code as timed alone (bench/hooks.py, medians, µs: made " in flat
    assert flat.count(" µs/connection") >= len(DEFAULT_VARIANTS)  # the collector, per variant
    assert "noise: untraced-twin, the same untraced app in servers of its own, against " in flat
    for variant in DEFAULT_VARIANTS:
        assert f"\n│ {variant} " in text, variant  # a row of the figures table
    assert "\x1b[" not in text  # no terminal colour codes in a Markdown file


def test_the_hooks_were_timed_stage_by_stage(quick_run: dict) -> None:
    from bench.hooks import STAGES

    figures = quick_run["hooks"]
    assert all(_positive(figures[name]) for name in STAGES), figures
    assert figures["spans"] == 5  # every stage of the connection shape made its span


def test_the_hooks_of_a_connection_were_timed_stage_by_stage(quick_run: dict) -> None:
    from bench.hooks import CONNECTION_STAGES

    figures = quick_run["connection_hooks"]
    assert all(_positive(figures[name]) for name in CONNECTION_STAGES), figures
    assert figures["spans"] == CONNECTION_SPANS


CONNECTION_SPANS = 22
"""What one connection of bench/hooks.py records: ws.connection, asgi.app, the chain's 12
layers, ws.handshake with its response, ws.accept, the greeting's message and frame, and
ws.close with both close frames."""


@pytest.mark.timeout(120)
def test_a_connections_life_is_timed_on_traced_connections() -> None:
    from bench import hooks
    from tracer.recorder import current_handling

    figures = hooks.measure_connection(connections=30)
    assert figures["spans"] == CONNECTION_SPANS, figures
    assert all(_positive(figures[stage]) for stage in hooks.CONNECTION_STAGES), figures
    assert current_handling() is None


def test_the_span_work_floor_was_timed(quick_run: dict) -> None:
    floor = quick_run["floor"]
    keys = ("build_us", "pickle_us", "build_facts_us", "pickle_facts_us", "encode_us")
    assert all(_positive(floor[key]) for key in keys), floor
    # Spans exported by a child process: its CPU is read and counted in the total.  The
    # child's CPU comes in clock ticks, which a run this short can round to zero, so what is
    # asserted is that the child did the writing and that the total adds its share.
    summary, rounds = quick_run["summary"], quick_run["rounds"]
    assert "SubprocessExporter" in quick_run["notes"]["conn-spans"]["exporter"]
    assert rounds["conn-spans"][0]["trace_bytes"] > 0
    conn = summary["conn-spans"]
    export = conn["export_cpu_per_msg_us"]["value"]
    assert math.isfinite(export) and export >= 0
    total, server = conn["total_cpu_per_msg_us"]["value"], conn["cpu_per_msg_us"]["value"]
    assert total == pytest.approx(server + export)
    assert summary["conn-inproc"]["export_cpu_per_msg_us"]["value"] == 0


@pytest.mark.timeout(120)
def test_the_hooks_stages_are_timed_on_traced_messages() -> None:
    from bench import hooks
    from tracer.recorder import current_handling

    figures = hooks.measure(messages=60)
    assert figures["spans"] == 5, figures  # message, frame, broadcast, send, frame
    assert all(_positive(figures[stage]) for stage in hooks.STAGES), figures
    assert current_handling() is None  # the connections' app context stayed in their tasks


def test_every_variant_ran_and_every_figure_is_finite(quick_run: dict) -> None:
    summary = quick_run["summary"]
    assert list(summary) == list(DEFAULT_VARIANTS)
    for variant in DEFAULT_VARIANTS:
        rounds = quick_run["rounds"][variant]
        assert len(rounds) == 1
        (result,) = rounds
        assert result["errors"] == [], (variant, result["errors"])
        assert result["messages"] == 40
        assert result["echo_windows"] == 2  # driven in turn with the others: two slices of 20
        for key in POSITIVE:
            assert _positive(result[key]), (variant, key, result[key])
            assert _positive(summary[variant][key]["value"]), (variant, key)
            assert _positive(summary[variant][key]["ratio"]), (variant, key)
        assert result["idle_rss_before"] > 0 and result["idle_rss_after"] > 0
        assert result["handshake_gc_us"] >= 0
        # Every server was driven in turn, as many handshakes each: two slices of five.
        assert result["handshakes"] == len(result["handshake_ms"]) == 10
        if UVLOOP is None:  # asyncio's transport: each measured 101 timed in the server, once
            assert len(result["handshake_answer_us"]) == 10, variant
            assert all(us > 0 for us in result["handshake_answer_us"])
            assert _positive(summary[variant]["handshake_answer_us_p50"]["ratio"])
        assert math.isfinite(summary[variant]["idle_kib_per_conn"]["delta"])
    baseline = summary[BASELINE]
    for key in POSITIVE:
        assert baseline[key]["ratio"] == pytest.approx(1.0)
    assert baseline["idle_kib_per_conn"]["delta"] == pytest.approx(0.0)


@pytest.mark.timeout(120)
def test_variants_are_traced_as_claimed(quick_run: dict) -> None:
    notes = quick_run["notes"]
    for variant in DEFAULT_VARIANTS:
        # FastAPI's native telemetry runs in its own variant only.
        assert notes[variant]["native_tracing"] is (variant == "fastapi-native"), variant
        if VARIANTS[variant].kind != "none":
            processor = "ExportPipeline" if VARIANTS[variant].kind == "wstrace" else (
                "BatchSpanProcessor"
            )
            assert notes[variant]["exporter"].startswith(processor), variant
    assert notes["otel-asgi"]["middleware"] == "OpenTelemetryMiddleware"
    rounds = quick_run["rounds"]
    # Spans really reached the exporter (always-on sampling), and the untraced server wrote none.
    for variant in ("conn-spans", "frames-off", "otel-asgi", "fastapi-native"):
        assert rounds[variant][0]["trace_bytes"] > 0, variant
    assert rounds[BASELINE][0]["trace_bytes"] == rounds["untraced-twin"][0]["trace_bytes"] == 0
    assert rounds["conn-discard"][0]["trace_bytes"] == 0  # recorded, then dropped unwritten


@pytest.mark.timeout(120)
def test_bar_is_judged(quick_run: dict) -> None:
    bar = quick_run["bar"]
    assert len(bar) == len(BAR)
    for line in bar:
        assert line["verdict"] in ("PASS", "FAIL"), line
        assert math.isfinite(line["measured"])
        assert (line["verdict"] == "PASS") == (line["measured"] <= line["limit"])


def test_ratios_pair_rounds_and_pool_handshakes_and_memory() -> None:
    def result(round_no: int, cpu: float, grown_kib: float, handshakes: list[float]) -> dict:
        figures = {key: 1.0 for key in report.FIGURES}
        return {
            **figures, "round": round_no, "cpu_per_msg_us": cpu, "idle": 100,
            "idle_rss_before": 10_000_000, "idle_rss_after": 10_000_000 + int(grown_kib * 1024),
            "handshake_ms": handshakes,
            "handshake_answer_us": [100 * ms for ms in handshakes],
        }

    raw = {
        "rounds": {
            BASELINE: [result(1, 100.0, 2000, [1.0, 2.0]), result(2, 200.0, 2000, [3.0]),
                       result(3, 100.0, 2000, [])],
            "conn-spans": [result(1, 120.0, 2600, [2.0, 3.0]), result(2, 260.0, 2300, [4.0]),
                           result(3, 110.0, 2600, [5.0])],
        }
    }
    summary = report.summarize(raw)
    cpu = summary["conn-spans"]["cpu_per_msg_us"]
    assert cpu["value"] == 120.0
    assert cpu["ratio"] == pytest.approx(1.2)  # median of 1.2, 1.3, 1.1: paired by round
    idle = summary["conn-spans"]["idle_kib_per_conn"]
    assert idle["value"] == pytest.approx(7500 / 300)  # pooled: all growth / all connections
    assert idle["delta"] == pytest.approx(5.0)
    p50 = summary["conn-spans"]["handshake_ms_p50"]
    assert p50["value"] == pytest.approx(3.5)  # of 2, 3, 4, 5
    assert p50["ratio"] == pytest.approx(3.5 / 2.0)
    answer = summary["conn-spans"]["handshake_answer_us_p50"]
    assert answer["value"] == pytest.approx(350.0)  # pooled as the latencies are
    assert answer["ratio"] == pytest.approx(350.0 / 200.0)
    # Each round against the untraced server of the same round: what the machine moved.
    assert cpu["paired"] == pytest.approx([1.2, 1.3, 1.1])
    assert p50["paired"] == pytest.approx([2.5 / 1.5, 4.0 / 3.0])  # round 3: no baseline
    assert idle["paired"] == pytest.approx([6.0, 3.0, 6.0])
    spreads = {(b["variant"], b["figure"]): b["spread"] for b in report.check_bar(summary)}
    assert spreads[("conn-spans", "cpu_per_msg_us")] == pytest.approx((1.1, 1.3))
    assert spreads[("conn-spans", "idle_kib_per_conn")] == pytest.approx((3.0, 6.0))
    verdicts = {(b["variant"], b["figure"]): b["verdict"] for b in report.check_bar(summary)}
    assert verdicts[("conn-spans", "cpu_per_msg_us")] == "PASS"
    assert verdicts[("conn-spans", "idle_kib_per_conn")] == "PASS"
    assert verdicts[("conn-spans", "handshake_ms_p50")] == "FAIL"
    assert verdicts[("msg-1pct", "cpu_per_msg_us")] == "not run"


def test_percentile_and_order() -> None:
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    assert math.isnan(percentile([], 50))
    variants = ["a", "b", "c"]
    assert [round_order(variants, r) for r in range(3)] == [
        ["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]
    ]
    assert resolve("otel-asgi") == [BASELINE, "otel-asgi"]
    with pytest.raises(ValueError):
        resolve("no-such-variant")


def test_interleaved_figures_join_the_rounds_they_were_measured_in() -> None:
    assert slices(125, SLICE) == [SLICE] * 5  # a round's 125 handshakes: five cycles
    assert slices(10, SLICE) == [5, 5]  # the quick run: two cycles
    assert slices(25, SLICE) == [13, 12]  # as many as asked, in two cycles at least
    assert slices(126, SLICE) == [21] * 6
    assert slices(1, SLICE) == [1]
    assert slices(4000, ECHO_SLICE) == [ECHO_SLICE] * 10  # ten echo slices a round
    assert share(10, 4) == [3, 3, 2, 2] and share(40, 2) == [20, 20]
    fanout = {"round": 1, "fanout_cpu_us": 400.0, "loadavg": [0.5, 0.6], "errors": ["late"]}
    rounds = {BASELINE: [dict(fanout)]}
    for index, p50 in enumerate([(2.0, 2.7), (2.2, 3.0)]):
        figures = {
            BASELINE: {"handshake_ms_p50": p50[0], "errors": ["odd"] if index == 0 else []},
            "conn-spans": {"handshake_ms_p50": p50[1]},
        }
        merge_round(rounds, index, figures, [0.9, 1.0], {"conn-spans": 1000 + index})
    assert rounds[BASELINE][0] == {  # its round's own load, both sides' errors
        **fanout, "handshake_ms_p50": 2.0, "errors": ["late", "odd"], "trace_bytes": 0
    }  # fmt: skip
    assert rounds[BASELINE][1] == {
        "handshake_ms_p50": 2.2, "round": 2, "errors": [], "loadavg": [0.9, 1.0],
        "trace_bytes": 0,
    }  # fmt: skip
    assert [r["round"] for r in rounds["conn-spans"]] == [1, 2]
    assert [r["trace_bytes"] for r in rounds["conn-spans"]] == [1000, 1001]


def test_profile_charges_samples_to_their_owner(tmp_path: Path) -> None:
    root = str(ROOT)
    site = "/venv/lib/python3.11/site-packages"
    std = "/usr/lib/python3.11"
    loop = f"run ({std}/asyncio/events.py:80)"
    feed = f"feed ({root}/tracer/recorder.py:10)"
    stacks = tmp_path / "p.txt"
    stacks.write_text(
        # the SDK working for wstrace: wstrace's
        f"{loop};{feed};start_span ({site}/opentelemetry/sdk/trace/__init__.py:5) 6\n"
        f"{loop};{feed};decode ({root}/tracer/wire/frames.py:20) 3\n"
        f"{loop};data_received ({site}/uvicorn/protocols/x.py:1) 7\n"
        # the app's own work inside a wstrace wrapper, calling the stdlib: the app's
        f"{loop};wrap ({root}/tracer/asgi.py:5);handle ({root}/demo_app/app.py:9);"
        f"dumps ({std}/json/__init__.py:231) 4\n"
    )
    result = profile.analyze(stacks)
    assert result.samples == 20
    assert result.package_share == pytest.approx(9 / 20)
    assert result.owners == pytest.approx(
        {"tracer": 9 / 20, "uvicorn": 7 / 20, "demo_app": 4 / 20}
    )
    spots = {(s.file, s.function): s for s in result.spots}
    recorder = spots[("tracer/recorder.py", "feed")]
    assert recorder.inclusive == pytest.approx(9 / 20)
    assert recorder.attributed == pytest.approx(6 / 20)
    assert recorder.self_ == 0
    decode = spots[("tracer/wire/frames.py", "decode")]
    assert decode.attributed == decode.self_ == pytest.approx(3 / 20)
    wrapper = spots[("tracer/asgi.py", "wrap")]
    assert wrapper.inclusive == pytest.approx(4 / 20)
    assert wrapper.attributed == 0


@pytest.mark.fast
@pytest.mark.parametrize(
    ("argv", "full"),
    [
        ([], True),
        (["--json", "out.json", "--quiet"], True),
        (["--phases", "idle"], False),
        (["--variants=conn-spans"], False),
        (["--rounds", "1"], False),
        (["--profile", "prof"], False),
        (["--quick"], False),
    ],
)
def test_only_a_full_run_rewrites_the_results_file_by_default(argv: list[str], full: bool) -> None:
    from bench.__main__ import _full_run, parse_args

    assert _full_run(parse_args(argv), argv) is full


@pytest.mark.fast
@pytest.mark.parametrize("phases", ["echo,handshake", "", " , "])
def test_phases_are_checked_before_any_server_starts(phases: str) -> None:
    from bench.__main__ import options_from, parse_args

    with pytest.raises(SystemExit, match="choose among idle, echo, fanout, handshakes"):
        options_from(parse_args(["--phases", phases]))


@pytest.mark.fast
def test_the_bar_shows_a_figure_just_over_its_limit_with_one_digit_more() -> None:
    import io

    from rich.console import Console

    bar = [
        {"text": "just over", "mode": "ratio", "limit": 1.3, "measured": 1.3004,
         "verdict": "FAIL", "spread": (0.951, 1.9)},
        {"text": "well under", "mode": "ratio", "limit": 1.3, "measured": 1.1,
         "verdict": "PASS", "spread": None},
        {"text": "memory", "mode": "delta", "limit": 8.0, "measured": 6.6,
         "verdict": "PASS", "spread": (5.8, 8.0)},
    ]  # fmt: skip
    console = Console(file=io.StringIO(), width=200, color_system=None)
    report.render_bar(bar, console)
    rows = {line.split("│")[1].strip(): line for line in console.file.getvalue().splitlines()
            if line.startswith("│")}  # fmt: skip
    assert "1.300×" in rows["just over"] and "0.95× – 1.90×" in rows["just over"]
    assert "1.10×" in rows["well under"] and "—" in rows["well under"]
    assert "+6.6 KiB" in rows["memory"] and "+5.8 KiB – +8.0 KiB" in rows["memory"]
