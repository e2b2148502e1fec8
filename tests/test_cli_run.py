"""``wstrace demo`` and ``wstrace serve``, run as a user runs them: real processes."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from tests.support.server import free_port
from tracer import vocab
from tracer.export.reader import load

WSTRACE = [sys.executable, "-m", "tracer.cli"]
ENV = {**os.environ, "COLUMNS": "160", "NO_COLOR": "1"}


def as_a_background_job() -> None:
    """In the child, before it runs: SIGINT ignored, as a non-interactive shell starts a
    background job (``wstrace serve &``) — and as the suite's own children inherit when the
    suite itself runs in the background.  ``kill -INT`` must still stop the server."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WSTRACE, *args], capture_output=True, text=True, timeout=timeout, env=ENV
    )


def test_demo_traces_a_scripted_auction(tmp_path: Path) -> None:
    result = run("demo", "--clients", "2", "--bids", "3", "--ws", "wsproto", "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in ("ws.handshake", "ws.broadcast", "stage latency", "ui.perfetto.dev"):
        assert expected in out, expected
    (path,) = tmp_path.glob("*.otlp.jsonl")
    # The page beside the trace carries the printed connection's walkthrough, as says the hint.
    assert "Step by step: wstrace explain" in out and "--connection 2" in out
    page = path.with_name(path.name.removesuffix(".otlp.jsonl") + ".html").read_text()
    assert '"title":"Walkthrough (connection 2)"' in page
    traces = load([path])
    assert len(traces.connections) == 3  # two bidders, one refused
    impls = {c.root.attributes[vocab.IMPL_WS] for c in traces.connections}
    assert impls == {"wsproto"}
    broadcasts = [s for s in traces.spans if s.name == vocab.WS_BROADCAST]
    assert len(broadcasts) == 3 + 1  # every bid and the chat line
    assert "Traceback" not in result.stderr


def serve_and_echo(command: list[str], path: str, cwd: Path | None = None) -> str:
    """Start ``command`` (a ``wstrace serve`` on a free port, appended), send "hello" to
    ``path`` once it listens, then Ctrl-C it; its stderr, once it exited with status 0."""
    port = free_port()
    process = subprocess.Popen(
        [*command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        cwd=cwd,
        preexec_fn=as_a_background_job,
        process_group=0,  # a group of its own: what it started goes with it if it hangs
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)

        async def talk() -> str:
            async with connect(f"ws://127.0.0.1:{port}{path}") as client:
                await client.send("hello")
                return await asyncio.wait_for(client.recv(), 5)

        assert asyncio.run(talk()) == "hello"
        time.sleep(0.3)
    finally:
        _, stderr = interrupt(process)
    assert process.returncode == 0, stderr
    return stderr


def interrupt(process: subprocess.Popen[str]) -> tuple[str, str]:
    """Ctrl-C ``process`` (started in a process group of its own) and read what it printed;
    if it does not stop, its whole group is killed, so a hang leaves nothing behind."""
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise


@pytest.mark.parametrize(
    "export", [[], ["--export-in-process"]], ids=["export-process", "export-in-process"]
)
def test_serve_traces_any_app_until_interrupted(tmp_path: Path, export: list[str]) -> None:
    stderr = serve_and_echo(
        [*WSTRACE, "serve", "tests.support.apps:echo_app", "--factory", "--out", str(tmp_path),
         *export],
        "/echo",
    )  # fmt: skip
    assert "traces written to" in stderr
    traces = load([tmp_path])
    (conn,) = traces.connections
    names = {s.name for s in conn.spans}
    assert {vocab.WS_HANDSHAKE, vocab.WS_MESSAGE_RECEIVE, "APIRouter", vocab.WS_ACCEPT} <= names


PROJECT_APP = """
async def app(scope, receive, send):  # an echo, in plain ASGI
    assert scope["type"] == "websocket"
    await receive()
    await send({"type": "websocket.accept"})
    message = await receive()
    await send({"type": "websocket.send", "text": message["text"]})
    await send({"type": "websocket.close"})
"""

FORKING_APP = """
import subprocess

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

own = TracerProvider(resource=Resource({"service.name": "the app's own"}))


async def app(scope, receive, send):  # echoes through a program it starts
    await receive()
    await send({"type": "websocket.accept"})
    text = (await receive())["text"]
    done = subprocess.run(  # blocks the loop: a test app
        ["echo", text], preexec_fn=lambda: None, capture_output=True, text=True, timeout=10
    )
    await send({"type": "websocket.send", "text": done.stdout.strip()})
    await send({"type": "websocket.close"})
"""

CONSOLE_SCRIPT = Path(sys.executable).with_name("wstrace")


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="the wstrace script is not installed")
def test_serve_finds_an_app_in_the_folder_it_runs_in(tmp_path: Path) -> None:
    """``wstrace serve main:app`` in a project's folder, as ``uvicorn main:app`` works: the
    console script's own folder, not the current one, is first on its path."""
    project = tmp_path / "project"
    project.mkdir()
    (project / "wstrace_project_main.py").write_text(PROJECT_APP, encoding="utf-8")
    serve_and_echo([str(CONSOLE_SCRIPT), "serve", "wstrace_project_main:app"], "/", cwd=project)
    (conn,) = load([project / "traces"]).connections
    assert vocab.WS_ACCEPT in {s.name for s in conn.spans}


def test_serve_reports_a_port_in_use_in_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run("serve", "tests.support.apps:echo_app", "--port", str(port))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "in use" in lines[0] and "--port" in lines[0]
    assert "Traceback" not in result.stderr


def test_serve_reports_a_bad_target_in_one_line() -> None:
    result = run("serve", "no_such_module:app")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_such_module" in lines[0]


def test_demo_help_teaches() -> None:
    result = run("demo", "--help")
    assert result.returncode == 0
    for option in (
        "--http",
        "--ws",
        "--clients",
        "--bids",
        "--shape",
        "--frames",
        "--out",
        "--serve",
    ):
        assert option in result.stdout


def test_demo_serve_keeps_the_app_up_for_a_browser(tmp_path: Path) -> None:
    import re
    import urllib.request

    process = subprocess.Popen(
        [*WSTRACE, "demo", "--clients", "1", "--bids", "1", "--serve", "--out", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        preexec_fn=as_a_background_job,
        process_group=0,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 60
        url = None
        while url is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, process.stderr.read() if process.stderr else "demo exited"
            found = re.search(r"(http://127\.0\.0\.1:\d+)/", line)
            url = found.group(1) if found else None
        assert url, "the demo never said where it serves"
        page = urllib.request.urlopen(url + "/", timeout=10).read().decode()
        assert "Set For Auction" in page
    finally:
        out, err = interrupt(process)
    assert process.returncode == 0, err
    assert "stage latency" in out  # the report still comes after Ctrl-C
    assert "Traceback" not in err


@pytest.mark.skipif(not CONSOLE_SCRIPT.exists(), reason="the wstrace script is not installed")
def test_serve_leaves_an_app_with_its_own_provider_free_to_start_programs(tmp_path: Path) -> None:
    """An app that makes a TracerProvider with a resource of its own, then starts a program
    with a ``preexec_fn`` (the SDK's fork hook runs in that child), as it could under uvicorn
    alone: wstrace's own provider must not leave that child waiting on a lock."""
    (tmp_path / "wstrace_forking_app.py").write_text(FORKING_APP, encoding="utf-8")
    serve_and_echo([str(CONSOLE_SCRIPT), "serve", "wstrace_forking_app:app"], "/", cwd=tmp_path)
