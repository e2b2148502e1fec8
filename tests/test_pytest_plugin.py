"""The pytest plugin, run the way its users run it: real pytest runs (pytester, in a
subprocess) on example test files, passing and failing, against real uvicorn servers and
Starlette's TestClient."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.readme import python_files
from tracer.export.reader import load
from tracer.testing import available_impls

pytest_plugins = ["pytester"]

APP = '''
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.websocket("/echo")
async def echo(websocket: WebSocket, token: str = "") -> None:
    if token == "bad":
        await websocket.close(code=1008)
        return
    await websocket.accept()
    try:
        while True:
            data = await websocket.receive_bytes()
            if data == b"quit":
                await websocket.close(code=1008, reason="told to")
                return
            await websocket.send_bytes(data)
    except WebSocketDisconnect:
        pass
'''

SERVER_TESTS = '''
import os

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from app import app


@pytest.fixture
def url(ws_server):
    return ws_server(app, http="h11", ws="wsproto") + "/echo"


def test_wrong_close_code(url, ws_trace):
    with connect(url) as ws:
        ws.send(b"quit")
        with pytest.raises(ConnectionClosed):
            ws.recv()
    ws_trace.connection().assert_closed(code=1000)


def test_frame_too_big(url, ws_trace):
    with connect(url, compression=None, max_size=None) as ws:
        ws.send(os.urandom(100_000))
        ws.recv()
    ws_trace.assert_no_frame_larger_than(65536)


def test_wrong_refusal_status(url, ws_trace):
    with pytest.raises(InvalidStatus), connect(url + "?token=bad"):
        pass
    ws_trace.connection().assert_handshake_refused(status=404)


def test_echo(url, ws_trace):
    with connect(url, compression=None) as ws:
        ws.send(b"hi")
        assert ws.recv() == b"hi"
    conn = ws_trace.connection("/e*")
    conn.assert_accepted().assert_closed(code=1000, initiator="client")
    assert conn.handshake.accept_valid is True
    assert [(f.direction, f.opcode_name, f.length, f.mask) for f in conn.frames] == [
        ("receive", "binary", 2, True),
        ("send", "binary", 2, False),
        ("receive", "close", 2, True),
        ("send", "close", 2, False),
    ]
    assert [(m.direction, m.size) for m in conn.messages] == [("receive", 2), ("send", 2)]
    assert conn.stack[-1].function.endswith("send") and conn.stack[0].function
'''

TESTCLIENT_TESTS = '''
import pytest
from starlette.websockets import WebSocketDisconnect

from app import app


def test_echo_then_quit(ws_trace):
    client = ws_trace.test_client(app)
    with client.websocket_connect("/echo") as ws:
        ws.send_bytes(b"hi")
        assert ws.receive_bytes() == b"hi"
        ws.send_bytes(b"quit")
        with pytest.raises(WebSocketDisconnect):
            ws.receive_bytes()
    conn = ws_trace.connection()
    assert conn.source == "asgi" and conn.handshake.status == 101
    conn.assert_closed(code=1008, initiator="server", reason="told to")
    assert [(m.direction, m.size) for m in conn.messages] == [
        ("receive", 2), ("send", 2), ("receive", 4)
    ]
    assert any(frame.function.endswith("echo") for frame in conn.stack)


def test_refused(ws_trace):
    with pytest.raises(WebSocketDisconnect):
        with ws_trace.test_client(app).websocket_connect("/echo?token=bad"):
            pass
    ws_trace.connection().assert_handshake_refused(status=403)


def test_wrong_close_code(ws_trace):
    with ws_trace.test_client(app).websocket_connect("/echo") as ws:
        ws.send_bytes(b"quit")
        with pytest.raises(WebSocketDisconnect):
            ws.receive_bytes()
    ws_trace.connection().assert_closed(code=1000)


def test_frames_are_out_of_sight(ws_trace):
    with ws_trace.test_client(app).websocket_connect("/echo") as ws:
        ws.send_bytes(b"hi")
        ws.receive_bytes()
    ws_trace.assert_no_frame_larger_than(65536)
'''


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def test_readme_examples_pass_on_every_implementation_pair(pytester: pytest.Pytester) -> None:
    files = python_files()
    assert set(files) == {"app.py", "test_app.py"}
    pytester.makepyfile(**{Path(name).stem: code for name, code in files.items()})
    result = run(pytester, "-v")
    pairs = available_impls()
    result.assert_outcomes(passed=5 * len(pairs))
    result.stdout.fnmatch_lines_random(
        [f"*test_a_ping_gets_its_pong?{pair.id}? PASSED*" for pair in pairs]
    )


def test_failures_on_a_real_server_show_the_tree_and_keep_their_traces(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(app=APP, test_server=SERVER_TESTS)
    pytester.makeconftest(
        """
        def pytest_wstrace_trace_kept(item, path):
            path.with_name(path.name + ".seen").write_text(item.nodeid)
        """
    )
    kept = pytester.path / "kept"
    result = run(pytester, f"--wstrace-dir={kept}")
    result.assert_outcomes(passed=1, failed=3)
    result.stdout.fnmatch_lines_random(
        [
            "E * /echo: closed with code 1008, expected 1000",
            "E * /echo: 2 frame(s) larger than 65536 B: receive binary len=100000, "
            "send binary len=100000",
            "E * /echo: handshake refused with 403, expected 404",
            "E *ws.connection * uvicorn/protocols/http/h11_impl.py:*",
            "E *ws.handshake.response * 403  error=403*",
            '*└── ws.close * code=1008  reason="told to"  by server',
            "*- wstrace -*",
            "conn 1 127.0.0.1:* /echo  handshake 101  closed 1008 by server  3 frame(s)  "
            "1 message(s)",
            f"wstrace: kept 3 trace file(s) in {kept} *",
        ]
    )
    names = ("test_frame_too_big", "test_wrong_close_code", "test_wrong_refusal_status")
    files = sorted(p.name for p in kept.glob("*.otlp.jsonl"))
    assert files == [f"test_server.py-{name}.otlp.jsonl" for name in names]
    for name in names:  # the hook other views of a kept trace hang on
        seen = kept / f"test_server.py-{name}.otlp.jsonl.seen"
        assert seen.read_text() == f"test_server.py::{name}"
    traces = load(kept / "test_server.py-test_wrong_close_code.otlp.jsonl")
    [conn] = traces.connections
    close = [s for s in conn.spans if s.name == "ws.close"]
    assert [s.attributes["websocket.close.code"] for s in close] == [1008]

    everything = pytester.path / "everything"
    result = run(pytester, f"--wstrace-dir={everything}", "--wstrace-keep=all", "-k", "echo")
    result.assert_outcomes(passed=1, deselected=3)
    [path] = everything.glob("*.otlp.jsonl")
    assert path.name == "test_server.py-test_echo.otlp.jsonl"
    assert len(load(path).connections) == 1


def test_testclient_records_through_the_middleware_alone(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(app=APP, test_testclient=TESTCLIENT_TESTS)
    result = run(pytester)
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines_random(
        [
            "E * /echo: closed with code 1008, expected 1000",
            "E *ws.connection * testclient:50000 → :80 /echo*",
            "E *└── ws.close * code=1008  reason=\"told to\"  by server*",
            "E * frame sizes cannot be checked: only the ASGI middleware traced this connection*",
        ]
    )


def test_markers_choose_pairs_and_tracer_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(app=APP)
    pytester.makepyfile(
        test_marked=textwrap.dedent(
            """
            import pytest
            from websockets.sync.client import connect

            from app import app


            @pytest.mark.ws_impls(("h11", "websockets"), ("httptools", "wsproto"), ("no", "such"))
            @pytest.mark.wstrace(frames="events")
            def test_marked(ws_server, ws_impl, ws_trace):
                url = ws_server(app)
                assert url.impl == ws_impl and url.http.startswith("http://127.0.0.1:")
                with connect(url + "/echo") as ws:
                    ws.send(b"x")
                    ws.recv()
                conn = ws_trace.connection()
                assert (conn.impl_http, conn.impl_ws) == tuple(ws_impl)
                assert not [s for s in conn.spans if s.name.startswith("ws.frame")]
                names = [f.opcode_name for f in conn.frames]
                assert names == ["binary", "binary", "close", "close"]


            @pytest.mark.parametrize("ws_impl", [("h11", "wsproto")])
            def test_parametrized_by_hand(ws_impl):
                assert ws_impl == ("h11", "wsproto")
            """
        )
    )
    result = run(pytester, "-v", "-rs")
    result.assert_outcomes(passed=3, skipped=1)
    result.stdout.fnmatch_lines_random(
        [
            "*test_marked?h11-websockets? PASSED*",
            "*test_marked?httptools-wsproto? PASSED*",
            "*test_marked?no-such? SKIPPED*",
            "SKIPPED * no-such: not installed",
        ]
    )


def test_the_plugin_is_inactive_until_a_fixture_is_used(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from tracer.hooks.context import Active
        from tracer.instrumentor import WebSocketInstrumentor


        def test_untouched():
            assert Active.recorder is None
            assert not WebSocketInstrumentor().is_instrumented_by_opentelemetry


        def test_after_a_traced_test(ws_trace):
            assert Active.recorder is not None


        def test_untouched_again():
            assert Active.recorder is None
        """
    )
    run(pytester).assert_outcomes(passed=3)
    result = run(pytester, "--wstrace-keep=all")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--wstrace-keep=all needs --wstrace-dir DIR*"])


def test_tracer_errors_during_a_test_are_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(app=APP)
    pytester.makepyfile(
        test_broken=textwrap.dedent(
            """
            from websockets.sync.client import connect

            from app import app
            from tracer.recorder import ConnectionRecord


            def broken(self, *args, **kwargs):
                raise RuntimeError("recorder bug")


            def test_broken_recorder(ws_server, ws_trace, monkeypatch):
                monkeypatch.setattr(ConnectionRecord, "on_send_enter", broken)
                with connect(ws_server(app, http="h11", ws="wsproto") + "/echo") as ws:
                    ws.send(b"x")
                    assert ws.recv() == b"x"
                assert ws_trace.tracer_errors.get("ws.send", 0) >= 1


            def test_clean(ws_trace):
                assert ws_trace.tracer_errors == {}
            """
        )
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.fnmatch_lines(
        ["*PytestWarning: wstrace: * internal tracer error(s) during this test*ws.send ×*"]
    )


def test_loading_the_plugin_imports_nothing_beyond_the_package() -> None:
    """pytest loads the plugin in every run in an environment with wstrace installed:
    it must not pull in the SDK, uvicorn or the tracer's writing side on its own."""
    probe = textwrap.dedent(
        """
        import json, sys
        import pytest, tracer
        before = set(sys.modules)
        import tracer.pytest_plugin
        print(json.dumps(sorted(set(sys.modules) - before)))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    added = json.loads(result.stdout.strip().splitlines()[-1])
    assert added == ["tracer.pytest_plugin"]
