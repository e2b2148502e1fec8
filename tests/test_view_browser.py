"""``wstrace view`` in a real headless Chromium: the demo on each WebSocket library, and a
trace full of hostile strings.

The demo runs for real (uvicorn, the auction app, real WebSocket clients), the page is written
by the CLI's own function, and the browser loads it from ``file://`` like a user would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, WebSocket

from tests.support.browser import chromium, console_problems, missing_reason, open_page
from tests.support.hostile import PAYLOADS, drop_spans, write_hostile_trace
from tests.support.server import WS_IMPLS
from tracer import vocab
from tracer.analysis.escape import neutralise
from tracer.export.reader import load

_MISSING = missing_reason()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=f"no headless browser: {_MISSING}")

# The middleware chain down to accept(), outermost first, as the FastAPI auction app runs it.
CHAIN = (
    "ProxyHeadersMiddleware",
    "FastAPI",
    "Starlette",
    "ServerErrorMiddleware",
    "CORSMiddleware",
    "ExceptionMiddleware",
    "AsyncExitStackMiddleware",
    "APIRouter",
    "APIWebSocketRoute",
    "websocket_endpoint",
    vocab.WS_ACCEPT,
)
SERVER_SEND = {
    "websockets": ("asgi_send", "uvicorn/protocols/websockets/websockets_impl.py"),
    "websockets-sansio": ("send", "uvicorn/protocols/websockets/websockets_sansio_impl.py"),
    "wsproto": ("send", "uvicorn/protocols/websockets/wsproto_impl.py"),
}
# The call chain at accept(), innermost first: (function's last name, file suffix or None).
STACK_CHAIN = (
    ("sender", "starlette/_exception_handler.py"),
    ("send", "starlette/websockets.py"),
    ("accept", "starlette/websockets.py"),
    ("connect", "manager.py"),
    ("websocket_endpoint", "app.py"),
    ("app", "fastapi/routing.py"),
    ("handle", "starlette/routing.py"),
    ("__call__", "starlette/routing.py"),
    ("__call__", "fastapi/middleware/asyncexitstack.py"),
    ("__call__", "starlette/middleware/exceptions.py"),
    ("__call__", "starlette/middleware/cors.py"),
    ("__call__", "starlette/middleware/errors.py"),
    ("__call__", "starlette/applications.py"),
    ("__call__", "fastapi/applications.py"),
    ("__call__", "uvicorn/middleware/proxy_headers.py"),
    ("run_asgi", "uvicorn/protocols/websockets/"),
    ("_run", "asyncio/events.py"),
)


@pytest.fixture(scope="module")
def browser() -> Any:
    with chromium() as driver:
        yield driver


def _demo_page(tmp: Path, ws: str) -> tuple[Path, Path]:
    from tracer.cli import write_view
    from tracer.demo import Script, run_demo

    trace, _ = run_demo(
        http="httptools",
        ws=ws,
        script=Script(clients=2, bids=2),
        shape="connection",
        frames="spans",
        out_dir=tmp,
        step=lambda _: None,
    )
    return trace, write_view([trace])


def _texts(driver: Any, selector: str) -> list[str]:
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", selector
    )


def _is_subsequence(wanted: list[Any], items: list[Any], match: Any) -> bool:
    it = iter(items)
    return all(any(match(w, item) for item in it) for w in wanted)


def _click(driver: Any, selector: str) -> None:
    driver.execute_script("document.querySelector(arguments[0]).click()", selector)


def _frames_on_wire(traces: Any, conn: Any) -> int:
    """Frames that crossed this connection's socket: its received frames, and the frames of
    every message sent to it (wherever the send was recorded)."""
    count = 0
    for span in traces.spans:
        if span.name not in (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND):
            continue
        send = next((a for a in traces.ancestors(span) if a.name == vocab.WS_MESSAGE_SEND), None)
        if send is not None:
            count += send.attributes.get(vocab.CONNECTION_ID) == conn.connection_id
        else:
            count += traces.connection_of(span) is conn
    return count


@pytest.mark.parametrize("ws", WS_IMPLS)
def test_demo_view(browser: Any, tmp_path: Path, ws: str) -> None:
    trace, page = _demo_page(tmp_path, ws)
    traces = load(trace)
    open_page(browser, page)
    assert console_problems(browser) == []

    rows = _texts(browser, ".crow[data-conn] > div:first-child")
    assert len(rows) == len(traces.connections) == 3  # two bidders and the refused request
    assert browser.execute_script("return document.getElementById('conn-count').textContent") == (
        "3 of 3 connections"
    )

    # Selecting a connection shows its waterfall; the chain is one row that opens layer by layer.
    _click(browser, '.crow[data-conn="1"]')
    chain_rows = _texts(browser, '#waterfall .wf-row[data-chain="1"]')
    assert len(chain_rows) == 1 and "ASGI chain" in chain_rows[0]
    names = _texts(browser, "#waterfall .wf-row .lab .nm")
    assert "ProxyHeadersMiddleware" not in names and vocab.WS_ACCEPT in names
    _click(browser, '#waterfall .wf-row[data-chain="1"] .tw')
    names = _texts(browser, "#waterfall .wf-row .lab .nm")
    assert "ProxyHeadersMiddleware" in names and "FastAPI" not in names
    _click(browser, "#expand-chain")
    names = browser.execute_script(
        "return [...document.querySelectorAll('#waterfall .wf-row:not(.chain)')]"
        ".map(r => r.dataset.name)"
    )
    assert _is_subsequence(list(CHAIN), names, lambda w, n: w == n), names
    _click(browser, '#waterfall .wf-row[data-name="ws.accept"]')
    code = browser.execute_script("return document.querySelector('#details .code').textContent")
    assert "uvicorn/protocols/websockets/" in code and "in uvicorn " in code
    assert len(_texts(browser, "#waterfall .tick")) > 0

    # The frames table of every connection, together, holds every frame of the trace.
    total = 0
    for index, conn in enumerate(traces.connections):
        _click(browser, f'.crow[data-conn="{index}"]')
        shown = len(_texts(browser, "#frames tbody tr"))
        assert shown == _frames_on_wire(traces, conn)
        total += shown
    frames = [s for s in traces.spans if s.name in (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND)]
    assert total == len(frames) > 0

    # Selecting a frame row selects its span.
    _click(browser, '.crow[data-conn="0"]')
    _click(browser, "#frames tbody tr")
    selected = browser.execute_script("return document.querySelector('#details dd').textContent")
    assert selected in (vocab.WS_FRAME_RECEIVE, vocab.WS_FRAME_SEND)
    assert _texts(browser, "#frames tbody tr.sel")
    assert _texts(browser, "#waterfall .tick.sel")

    # The handshake stack lists the call chain, innermost first, grouped by package.
    _click(browser, '.crow[data-conn="1"]')
    _click(browser, 'nav.sub button[data-sub="stack"]')
    stack = browser.execute_script(
        "return [...document.querySelectorAll('#stack tr.frame-row')].map(r => "
        "[r.children[2].textContent, r.children[3].textContent, r.dataset.pkg])"
    )
    wanted = [SERVER_SEND[ws], *STACK_CHAIN]

    def matches(want: tuple[str, str | None], row: list[str]) -> bool:
        function, where, _ = row
        return function.split(".")[-1] == want[0] and (want[1] is None or want[1] in where)

    assert _is_subsequence(wanted, stack, matches), stack
    packages = {row[0].split(".")[-1]: row[2] for row in stack}
    assert packages["run_asgi"] == "uvicorn" and packages["_run"] == "asyncio"
    assert packages["accept"] == "starlette" and packages["websocket_endpoint"] == "app"

    # Fan-out: every bid reached both bidders.
    _click(browser, 'nav.sub button[data-sub="fanout"]')
    assert len(_texts(browser, "#fanout .fan-item")) >= 1
    assert len(_texts(browser, "#fanout .fan-row")) >= 2

    _click(browser, 'nav.tabs button[data-tab="latency"]')
    stages = _texts(browser, "#latency tbody tr td:first-child")
    assert vocab.WS_HANDSHAKE in stages and "fan-out per broadcast" in stages

    # The walkthrough of connection 1 (wstrace explain) is a tab of the page, styled and shown.
    _click(browser, 'nav.tabs button[data-tab="x:walkthrough"]')
    steps = browser.execute_script(
        "const s = document.getElementById('tab-walkthrough');"
        "return s.hidden ? null : [...s.querySelectorAll('h2')].map(h => h.textContent)"
    )
    assert steps is not None and len(steps) == 13, steps
    assert "bit by bit" in steps[9] and "closing handshake" in steps[12]
    width = browser.execute_script(
        "return getComputedStyle(document.querySelector('.wstrace-explain')).maxWidth"
    )
    assert width != "none"  # the walkthrough's own stylesheet was allowed by the CSP
    assert console_problems(browser) == []


def test_hostile_strings_stay_text(browser: Any, tmp_path: Path) -> None:
    from tracer.cli import write_view

    page = write_view([write_hostile_trace(tmp_path / "hostile.otlp.jsonl")])
    open_page(browser, page)

    def safe() -> None:
        from selenium.common.exceptions import NoAlertPresentException

        with pytest.raises(NoAlertPresentException):
            browser.switch_to.alert.text  # noqa: B018 - reading it is the check
        assert browser.execute_script("return window.__pwned === undefined")
        assert browser.execute_script("return document.images.length") == 0
        assert browser.execute_script("return document.scripts.length") == 2
        assert console_problems(browser) == []
        assert browser.execute_script("return document.title").startswith("wstrace view")

    safe()
    assert _texts(browser, ".crow[data-conn] .path") == [neutralise(PAYLOADS["path"])]
    _click(browser, '.crow[data-conn="0"]')
    _click(browser, "#expand-chain")
    names = browser.execute_script(
        "return [...document.querySelectorAll('#waterfall .wf-row:not(.chain)')]"
        ".map(r => r.querySelector('.nm').textContent)"
    )
    assert PAYLOADS["span"] in names
    _click(browser, '#waterfall .wf-row[data-name="ws.handshake"]')
    values = _texts(browser, "#detail-attrs dd")
    assert json.dumps([PAYLOADS["header"]]) in values  # a list attribute is shown as JSON
    assert neutralise(PAYLOADS["subprotocol"]) in values
    _click(browser, '#waterfall .wf-row[data-name="ws.close"]')
    values = _texts(browser, "#detail-attrs dd")
    assert neutralise(PAYLOADS["reason"]) in values
    marks = _texts(browser, "#detail-attrs dd .ctl")
    assert marks == ["\\x07", "\\x1b", "\\u202e", "\\x0d", "\\x0a"]
    _click(browser, "#frames tbody tr")
    closes = _texts(browser, "#frames tbody tr td:nth-child(10)")
    assert closes == [f'4000 "{neutralise(PAYLOADS["reason"])}"']
    _click(browser, 'nav.sub button[data-sub="stack"]')
    functions = _texts(browser, "#stack tr.frame-row td:nth-child(3)")
    assert neutralise(PAYLOADS["function"]) in functions
    safe()


def test_table_sorts_filters_and_zooms(browser: Any, tmp_path: Path) -> None:
    trace, page = _demo_page(tmp_path, "websockets-sansio")
    traces = load(trace)
    open_page(browser, page)
    refused = [
        c.index
        for c in traces.connections
        if c.root.attributes.get(vocab.HTTP_RESPONSE_STATUS_CODE) != 101
    ]
    _click(browser, "#filter-errors")
    shown = _texts(browser, ".crow[data-conn] > div:first-child")
    assert [int(n) for n in shown] == refused == [3]
    _click(browser, "#filter-errors")
    _click(browser, '.crow.head div[data-key="hs"]')
    order = _texts(browser, ".crow[data-conn] > div:first-child")
    slowest = sorted(
        traces.connections,
        key=lambda c: -next(s.duration_ns for s in c.spans if s.name == vocab.WS_HANDSHAKE),
    )
    assert [int(n) for n in order] == [c.index for c in slowest]
    browser.execute_script(
        "const box = document.getElementById('filter-text'); box.value = '999999';"
        "box.dispatchEvent(new Event('input'))"
    )
    assert _texts(browser, ".crow[data-conn] .path") == ["/ws/auction/999999"]

    _click(browser, '.crow[data-conn="2"]')
    browser.execute_script("document.getElementById('filter-text').blur()")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    ActionChains(browser).send_keys(Keys.ARROW_UP).perform()  # only one row is shown
    assert _texts(browser, ".crow.sel .path") == ["/ws/auction/999999"]
    browser.execute_script(
        "const box = document.getElementById('filter-text'); box.value = '';"
        "box.dispatchEvent(new Event('input')); box.blur()"
    )
    ActionChains(browser).send_keys(Keys.ARROW_UP).perform()
    above = order[max(0, order.index("3") - 1)]  # the row above the refused connection
    assert _texts(browser, ".crow.sel > div:first-child") == [above]
    before = _texts(browser, "#waterfall .wf-axis .wf-tick span")
    _click(browser, '#conn-view .toolbar button[title="zoom in"]')
    after = _texts(browser, "#waterfall .wf-axis .wf-tick span")
    assert before != after
    assert console_problems(browser) == []


def test_many_connections_are_virtualised_and_marked(browser: Any, tmp_path: Path) -> None:
    from bench.viewer import synthesise
    from tracer.cli import write_view

    trace = tmp_path / "many.otlp.jsonl"
    held = synthesise(trace, 120)
    # Drop the close of every connection: each is then marked incomplete.
    drop_spans(trace, trace, vocab.WS_CLOSE)
    open_page(browser, write_view([trace]))
    total = held["connections"]
    assert browser.execute_script("return document.getElementById('conn-count').textContent") == (
        f"{total} of {total} connections"
    )
    drawn = len(_texts(browser, ".crow[data-conn]"))
    assert 0 < drawn < 40 < total
    browser.execute_script(
        "const s = document.getElementById('conn-scroll'); s.scrollTop = s.scrollHeight;"
        "s.dispatchEvent(new Event('scroll'))"
    )
    assert str(total - 1) in browser.execute_script(
        "return [...document.querySelectorAll('.crow[data-conn]')].map(r => r.dataset.conn)"
    )
    accepted = total - total // 6
    assert len(_texts(browser, ".crow[data-conn] .badge.inc")) > 0
    _click(browser, "#filter-incomplete")
    assert (
        browser.execute_script("return document.getElementById('conn-count').textContent")
        == f"{accepted} of {total} connections"
    )
    banner = _texts(browser, "#conn-view .banner.inc")
    assert banner == ["Incomplete record: no ws.close recorded"]
    assert console_problems(browser) == []


def _closing_app() -> Any:
    """Accepts any path with the client's first subprotocol, then closes with the reason the
    client sent: path, headers, subprotocol and close reason all come from the client."""
    app = FastAPI()

    @app.websocket("/ws/{rest:path}")
    async def close_as_told(websocket: WebSocket, rest: str) -> None:
        offered = websocket.scope.get("subprotocols") or []
        await websocket.accept(subprotocol=offered[0] if offered else None)
        reason = await websocket.receive_text()
        await websocket.close(code=4000, reason=reason)

    return app


def test_hostile_strings_from_a_real_server_stay_text(browser: Any, tmp_path: Path) -> None:
    import asyncio

    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    import tracer
    from tests.support.server import run_server
    from tracer.cli import write_view
    from tracer.demo import make_provider

    path = "/ws/<script>window.__pwned=1</script>"
    agent = '<img src=x onerror="window.__pwned=1">'
    reason = "</script><!--\x07\x1b[2J"
    provider, exporter = make_provider(tmp_path, offload=False)
    tracer.instrument(tracer_provider=provider)
    try:
        app = tracer.TracingMiddleware(_closing_app(), tracer_provider=provider)
        with run_server(app, http="h11", ws="wsproto") as server:

            async def client() -> None:
                async with connect(
                    server.ws_url + path, subprotocols=["javascript"], user_agent_header=agent
                ) as ws:
                    await ws.send(reason)
                    with pytest.raises(ConnectionClosed):
                        await asyncio.wait_for(ws.recv(), 10)

            asyncio.run(client())
    finally:
        tracer.uninstrument()
        provider.shutdown()
    open_page(browser, write_view([exporter.path]))
    recorded = _texts(browser, ".crow[data-conn] .path")
    assert len(recorded) == 1 and "<script>" in recorded[0]
    assert recorded == [load(exporter.path).connections[0].root.attributes[vocab.URL_PATH]]
    _click(browser, '.crow[data-conn="0"]')
    _click(browser, '#waterfall .wf-row[data-name="ws.close"]')
    assert neutralise(reason) in _texts(browser, "#detail-attrs dd")
    with_agent = [
        span.name
        for span in load(exporter.path).spans
        if agent in str(span.attributes.get(vocab.HTTP_REQUEST_HEADER_PREFIX + "user-agent"))
    ]
    assert with_agent
    _click(browser, f'#waterfall .wf-row[data-name="{with_agent[0]}"]')
    assert json.dumps([agent]) in _texts(browser, "#detail-attrs dd")
    assert browser.execute_script("return window.__pwned === undefined")
    assert browser.execute_script("return document.images.length") == 0
    assert console_problems(browser) == []


def test_a_long_connection_opens_with_its_messages_folded(browser: Any, tmp_path: Path) -> None:
    from tracer.cli import write_view
    from tracer.demo import Script, run_demo

    trace, _ = run_demo(
        http="h11",
        ws="websockets-sansio",
        script=Script(clients=2, bids=120),
        shape="connection",
        frames="spans",
        out_dir=tmp_path,
        step=lambda _: None,
    )
    traces = load(trace)
    conn = traces.connections[0]
    assert len(conn.spans) > 300
    open_page(browser, write_view([trace]))
    _click(browser, '.crow[data-conn="0"]')
    messages = [s for s in conn.spans if s.name == vocab.WS_MESSAGE_RECEIVE]
    rows = _texts(browser, "#waterfall .wf-row:not(.lane)")
    assert len(messages) < len(rows) < 2 * len(messages)
    _click(browser, '#waterfall .wf-row[data-name="ws.message.receive"] .tw')
    assert len(_texts(browser, "#waterfall .wf-row:not(.lane)")) > len(rows)
    assert len(_texts(browser, "#waterfall .tick")) == _frames_on_wire(traces, conn)
    assert console_problems(browser) == []
