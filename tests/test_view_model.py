"""The viewer's data model and page, without a browser: tables, escaping, CSP, the CLI."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.hostile import PAYLOADS, drop_spans, write_hostile_trace
from tracer import vocab
from tracer.analysis import view_model as vm
from tracer.analysis.html import ExtraTab, embed_json, render_view
from tracer.analysis.stats import compute_stats
from tracer.cli import app
from tracer.export.reader import load

pytestmark = pytest.mark.fast

SAMPLES = sorted((Path(__file__).parent.parent / "traces" / "samples").glob("*.otlp.jsonl"))


def _decode(model: dict, pair: int) -> tuple[str, object]:
    key, kind, value = model["p"][pair]
    strings = model["s"]
    if kind in (vm.KIND_STR, vm.KIND_BYTES, vm.KIND_TEXT):
        value = strings[value]
    elif kind == vm.KIND_BOOL:
        value = bool(value)
    elif kind == vm.KIND_NULL:
        value = None
    return strings[key], value


def _plain(value: object) -> object:
    return value.hex() if isinstance(value, bytes) else value


@pytest.fixture(params=SAMPLES, ids=lambda p: p.name.split("-", 2)[-1].split(".")[0])
def sample(request: pytest.FixtureRequest) -> Path:
    return request.param


def test_samples_exist() -> None:
    assert len(SAMPLES) == 3


def test_every_span_round_trips_through_the_tables(sample: Path) -> None:
    traces = load(sample)
    model = vm.build_model(traces)
    model = json.loads(json.dumps(model))  # what the page parses
    assert len(model["conns"]) == len(traces.connections)
    for conn, data in zip(traces.connections, model["conns"], strict=True):
        assert len(data["spans"]) == len(conn.spans)
        for span, row in zip(conn.spans, data["spans"], strict=True):
            assert model["s"][row[vm.SPAN_NAME]] == span.name
            assert row[vm.SPAN_START] == span.start_ns - conn.start_ns
            assert row[vm.SPAN_DUR] == span.duration_ns
            assert row[vm.SPAN_ID] == span.span_id
            decoded = dict(_decode(model, i) for i in row[vm.SPAN_PAIRS])
            assert decoded == {k: _plain(v) for k, v in span.attributes.items()}
            parent = traces.parent(span)
            if row[vm.SPAN_PARENT] >= 0:
                assert conn.spans[row[vm.SPAN_PARENT]] is parent
            events = row[vm.SPAN_EVENTS]
            assert [model["s"][e[0]] for e in events] == [e.name for e in span.events]


def test_pairs_are_shared(sample: Path) -> None:
    traces = load(sample)
    model = vm.build_model(traces)
    used = sum(len(row[vm.SPAN_PAIRS]) for c in model["conns"] for row in c["spans"])
    assert len(model["p"]) < used / 3
    assert len(model["s"]) == len(set(model["s"]))


def _wire(traces, span):  # type: ignore[no-untyped-def]
    """The connection id a frame went over, found independently of the model's code."""
    for ancestor in traces.ancestors(span):
        if ancestor.name == vocab.WS_MESSAGE_SEND:
            return ancestor.attributes[vocab.CONNECTION_ID]
    return traces.connection_of(span).connection_id


def test_frames_are_filed_under_the_socket_they_crossed(sample: Path) -> None:
    traces = load(sample)
    model = vm.build_model(traces)
    frames = [s for s in traces.spans if s.name in (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND)]
    assert frames
    assert sum(len(c["frames"]) for c in model["conns"]) == len(frames)
    for data in model["conns"]:
        expected = [s for s in frames if _wire(traces, s) == data["n"]]
        assert len(data["frames"]) == len(expected)
        times = [f[0] for f in data["frames"]]
        assert times == sorted(times)


def test_messages_in_and_out(sample: Path) -> None:
    traces = load(sample)
    model = vm.build_model(traces)
    sends = [s for s in traces.spans if s.name == vocab.WS_MESSAGE_SEND]
    for data, conn in zip(model["conns"], traces.connections, strict=True):
        assert data["in"] == sum(1 for s in conn.spans if s.name == vocab.WS_MESSAGE_RECEIVE)
        assert data["out"] == sum(
            1 for s in sends if s.attributes.get(vocab.CONNECTION_ID) == data["n"]
        )


def test_fanout_matches_the_stats(sample: Path) -> None:
    traces = load(sample)
    model = vm.build_model(traces)
    stats = compute_stats(traces)
    fans = [f for c in model["conns"] for f in c["fan"]]
    assert len(fans) == stats.fanout.count > 0
    latencies = sorted(max(s[2] for s in f[3]) - f[2] for f in fans)
    assert latencies[-1] == stats.fanout.max
    derived = {row["name"]: row for row in model["latency"]["derived"]}
    assert sum(derived["fan-out per broadcast"]["hist"]) == stats.fanout.count


def test_stack_rows_are_grouped_by_package(sample: Path) -> None:
    traces = load(sample)
    model = vm.build_model(traces)
    accepted = [c for c in model["conns"] if c["st"] == 101]
    refused = [c for c in model["conns"] if c["st"] != 101]
    assert accepted and refused
    assert all(c["stack"] is None for c in refused)
    for conn in accepted:
        packages = [model["s"][row[3]] for row in conn["stack"]["rows"]]
        assert packages[-1] == "uvicorn"  # the server's send, innermost
        assert {"asyncio", "uvicorn", "starlette", "fastapi", "app"} <= set(packages)


def test_latency_rows_match_the_stats(sample: Path) -> None:
    traces = load(sample)
    model = vm.build_model(traces)
    stats = compute_stats(traces)
    rows = {row["name"]: row for row in model["latency"]["stages"]}
    assert list(rows) == list(stats.stages)
    for name, summary in stats.stages.items():
        assert rows[name]["p99_ns"] == summary.p99
        assert sum(rows[name]["hist"]) == summary.count


@pytest.mark.parametrize(
    ("path", "package"),
    [
        ("/v/lib/python3.11/site-packages/uvicorn/main.py", "uvicorn"),
        ("/v/lib/python3.11/site-packages/websockets/legacy/server.py", "websockets"),
        ("/usr/lib/python3/dist-packages/wsproto/__init__.py", "wsproto"),
        ("/root/.pyenv/versions/3.11.7/lib/python3.11/asyncio/events.py", "asyncio"),
        ("/root/.pyenv/versions/3.11.7/lib/python3.11/threading.py", "python"),
        ("/srv/project/demo_app/app.py", "app"),
        ("C:\\Python\\Lib\\site-packages\\starlette\\routing.py", "starlette"),
    ],
)
def test_package_of(path: str, package: str) -> None:
    assert vm.package_of(path) == package


def test_incomplete_connection_says_why(tmp_path: Path) -> None:
    cut = drop_spans(SAMPLES[0], tmp_path / "cut.otlp.jsonl", vocab.WS_CLOSE)
    model = vm.build_model(load(cut))
    for conn in model["conns"]:
        reasons = [model["s"][i] for i in conn["inc"]]
        assert reasons == (["no ws.close recorded"] if conn["st"] == 101 else [])


def test_embedded_json_cannot_end_its_script_element() -> None:
    data = {"x": "</script><!--<script>&amp;\u2028\u2029\ud800", "</SCRIPT>": [1]}
    text = embed_json(data)
    assert not set("<>&") & set(text)
    assert "\u2028" not in text and "\u2029" not in text
    assert text.isascii()
    assert json.loads(text) == data


def test_page_is_self_contained_with_a_strict_csp(tmp_path: Path) -> None:
    page = render_view(load(write_hostile_trace(tmp_path / "h.otlp.jsonl")), sources=["h"])
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page)
    assert csp is not None
    policy = csp.group(1).replace("&#x27;", "'")
    assert "default-src 'none'" in policy and "connect-src 'none'" in policy
    assert "unsafe" not in policy
    script = re.search(r"<script>(.*?)</script>\n</body>", page, re.S)
    assert script is not None
    digest = base64.b64encode(hashlib.sha256(script.group(1).encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in page
    assert page.count("<script") == 2  # the data element and the viewer
    for payload in PAYLOADS.values():
        assert "<" in payload
        assert payload not in page


def test_extra_tabs_are_embedded_and_named() -> None:
    traces = load(SAMPLES[0])
    page = render_view(traces, tabs=[ExtraTab("walkthrough", "Walkthrough", "<p>step 1</p>")])
    assert '<section class="extra-tab" id="tab-walkthrough" hidden><p>step 1</p></section>' in page
    assert '"tabs":[{"id":"walkthrough","title":"Walkthrough"}]' in page
    with pytest.raises(ValueError, match="tab id"):
        ExtraTab('x" onclick="', "bad", "")


def test_cli_view_writes_beside_the_trace(tmp_path: Path) -> None:
    trace = tmp_path / "run.otlp.jsonl"
    trace.write_bytes(SAMPLES[0].read_bytes())
    result = CliRunner().invoke(app, ["view", str(trace)])
    assert result.exit_code == 0, result.output
    page = tmp_path / "run.html"
    assert page.exists()
    assert str(page) in result.stderr
    out = tmp_path / "other.html"
    result = CliRunner().invoke(app, ["view", str(trace), "-o", str(out)])
    assert result.exit_code == 0 and out.read_text() == page.read_text()


def test_cli_view_carries_one_connections_walkthrough(tmp_path: Path) -> None:
    import html

    from tracer.analysis.explain import STYLE
    from tracer.analysis.html import _asset, content_security_policy

    trace = tmp_path / "run.otlp.jsonl"
    trace.write_bytes(SAMPLES[0].read_bytes())
    assert CliRunner().invoke(app, ["view", str(trace), "--walkthrough", "2"]).exit_code == 0
    page = (tmp_path / "run.html").read_text()
    assert '"tabs":[{"id":"walkthrough","title":"Walkthrough (connection 2)"}]' in page
    assert page.count("<h2>") == 13  # the thirteen steps of `wstrace explain`
    # The walkthrough's stylesheet joins the page's, and the CSP's hash is of the two together.
    style = _asset("viewer.css") + STYLE
    assert f"<style>{style}</style>" in page
    assert html.escape(content_security_policy(_asset("viewer.js"), style)) in page
    assert CliRunner().invoke(app, ["view", str(trace), "--walkthrough", "0"]).exit_code == 0
    assert '"tabs":[]' in (tmp_path / "run.html").read_text()
    result = CliRunner().invoke(app, ["view", str(trace), "--walkthrough", "99"])
    assert result.exit_code == 1 and "--walkthrough 99" in result.stderr


def test_cli_view_fails_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["view", str(tmp_path / "missing.otlp.jsonl")])
    assert result.exit_code == 1
    assert result.stderr.startswith("wstrace: error: ") and "no such file" in result.stderr


def test_installed_versions_name_only_files_that_exist_here() -> None:
    from importlib.metadata import version

    import uvicorn.config

    from tracer.export.records import SpanRecord
    from tracer.export.traceset import TraceSet

    here = uvicorn.config.__file__
    gone = "/nowhere/lib/python3.11/site-packages/uvicorn/config.py"
    spans = [
        SpanRecord("1" * 32, f"{i:016x}", None, "x", 0, 1, {vocab.CODE_FILE_PATH: path})
        for i, path in enumerate([here, gone, "/srv/app/main.py"], start=1)
    ]
    assert vm.installed_versions(TraceSet(spans)) == {here: f"uvicorn {version('uvicorn')}"}
