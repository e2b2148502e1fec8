"""pytest plugin: assert on WebSocket internals in your own tests.

Registered through the ``pytest11`` entry point, it does nothing until a test asks for one of
its fixtures (the module imports only pytest; the tracer is loaded by the fixtures):

- ``ws_trace`` records the WebSocket connections the test makes (a :class:`tracer.testing.WsTrace`):
  ``ws_trace.connections``, ``ws_trace.connection(path)``, the assertion methods, and
  ``ws_trace.test_client(app)`` for Starlette's / FastAPI's ``TestClient``.
- ``ws_server(app, http=..., ws=...)`` runs ``app`` under a real uvicorn on a free loopback
  port and returns its ``ws://`` URL; the server stops when the test ends.
- ``ws_impl`` is a uvicorn HTTP × WebSocket pair: a test that uses it runs once per pair
  installed (``@pytest.mark.ws_impls(("h11", "wsproto"), ...)`` narrows it), and
  ``ws_server`` serves on that pair.
- ``@pytest.mark.wstrace(frames="events", ...)`` passes tracer options to ``ws_trace``.

``--wstrace-dir DIR`` keeps the trace of each failed test that used ``ws_trace`` as
``DIR/<test id>.otlp.jsonl`` (``wstrace show`` reads it); ``--wstrace-keep=all`` keeps every
test's.  Other plugins can write more views of a kept trace by implementing
``pytest_wstrace_trace_kept(item, path)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tracer.testing import Impl, ServerURL, WsTrace

KEEP_FAILED = "failed"
KEEP_ALL = "all"

_reports = pytest.StashKey[dict[str, pytest.TestReport]]()
_recording = pytest.StashKey["WsTrace"]()
_kept = pytest.StashKey[list[Path]]()


class _HookSpecs:
    @pytest.hookspec
    def pytest_wstrace_trace_kept(self, item: pytest.Item, path: Path) -> None:
        """A test's trace was written to ``path`` (OTLP JSON Lines): write other views of it."""


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(_HookSpecs)


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("wstrace", "WebSocket traces of tests using ws_trace (wstrace)")
    group.addoption(
        "--wstrace-dir",
        metavar="DIR",
        default=None,
        help="keep the trace of each failed test that used ws_trace in DIR as OTLP JSON Lines",
    )
    group.addoption(
        "--wstrace-keep",
        choices=(KEEP_FAILED, KEEP_ALL),
        default=KEEP_FAILED,
        help="with --wstrace-dir: keep the traces of failed tests (default) or of all tests",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "ws_impls(*pairs): run a test using ws_impl on these (http, ws) pairs only"
    )
    config.addinivalue_line(
        "markers", "wstrace(**options): tracer options for ws_trace (frames, shape, ...)"
    )
    if config.getoption("wstrace_keep") == KEEP_ALL and not config.getoption("wstrace_dir"):
        raise pytest.UsageError("--wstrace-keep=all needs --wstrace-dir DIR")
    config.stash[_kept] = []


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "ws_impl" not in metafunc.fixturenames or _parametrized_by_hand(metafunc, "ws_impl"):
        return
    from tracer.testing import Impl, available_impls

    installed = available_impls()
    marker = metafunc.definition.get_closest_marker("ws_impls")
    wanted = [Impl(*pair) for pair in marker.args] if marker is not None else installed
    params = [
        pytest.param(
            pair,
            id=pair.id,
            marks=() if pair in installed else pytest.mark.skip(reason=f"{pair.id}: not installed"),
        )
        for pair in wanted
    ]
    metafunc.parametrize("ws_impl", params, indirect=True)


def _parametrized_by_hand(metafunc: pytest.Metafunc, name: str) -> bool:
    for marker in metafunc.definition.iter_markers("parametrize"):
        names = marker.args[0] if marker.args else marker.kwargs.get("argnames", "")
        if isinstance(names, str):
            names = [part.strip() for part in names.split(",")]
        if name in names:
            return True
    return False


@pytest.fixture
def ws_impl(request: pytest.FixtureRequest) -> Impl:
    """A uvicorn (http, ws) implementation pair; tests using it run once per installed pair."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
def ws_trace(request: pytest.FixtureRequest) -> Iterator[WsTrace]:
    """Records the WebSocket connections this test makes; query them, assert on them."""
    from tracer.testing import WsTrace

    marker = request.node.get_closest_marker("wstrace")
    options = dict(marker.kwargs) if marker is not None else {}
    recording = WsTrace(**options).start()
    request.node.stash[_recording] = recording
    try:
        yield recording
    finally:
        try:
            _keep(request.node, recording)
        finally:
            recording.stop()
            del request.node.stash[_recording]  # items outlive their test: let the spans go
            _warn_tracer_errors(request.node, recording)


@pytest.fixture
def ws_server(
    ws_trace: WsTrace, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ServerURL]]:
    """``ws_server(app, http=..., ws=..., **uvicorn_options)``: serve ``app`` (traced) under a
    real uvicorn on a free loopback port until the test ends; returns its ``ws://`` URL.

    Without ``http`` / ``ws`` it uses the test's ``ws_impl`` if it has one, else uvicorn's
    defaults.
    """
    default = request.getfixturevalue("ws_impl") if "ws_impl" in request.fixturenames else None
    with contextlib.ExitStack() as servers:

        def start(
            app: Any, *, http: str | None = None, ws: str | None = None, **uvicorn_options: Any
        ) -> ServerURL:
            http = http or (default.http if default is not None else "auto")
            ws = ws or (default.ws if default is not None else "auto")
            return servers.enter_context(ws_trace.serve(app, http=http, ws=ws, **uvicorn_options))

        yield start


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    recording = item.stash.get(_recording, None)
    if recording is not None:
        item.stash.setdefault(_reports, {})[report.when] = report
        if report.failed and report.when == "call":
            report.sections.append(("wstrace", _summary(recording)))
    return report


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    kept = config.stash.get(_kept, [])
    if kept:
        directory = Path(config.getoption("wstrace_dir"))
        terminalreporter.write_line(
            f"wstrace: kept {len(kept)} trace file(s) in {directory} "
            f"(wstrace show FILE prints a connection's tree)"
        )


def _summary(recording: WsTrace) -> str:
    """One line per connection recorded so far: what a failure most often needs first."""
    try:
        _, views = recording.snapshot()
    except Exception as exc:  # a report must not fail because a trace could not be read
        return f"could not read the recorded spans: {exc!r}"
    lines = []
    for conn in views:
        close = conn.close
        end = f"closed {close.code} by {close.initiator}" if close else "no close"
        lines.append(
            f"{conn.label}  handshake {conn.handshake.status}  {end}  "
            f"{len(conn.frames)} frame(s)  {len(conn.messages)} message(s)"
        )
    still_open = recording.open_connections
    if still_open:
        lines.append(f"{still_open} connection(s) still open when the test failed")
    return "\n".join(lines) or "no WebSocket connection recorded"


def _warn_tracer_errors(item: pytest.Item, recording: WsTrace) -> None:
    """Nothing hidden: a trace the tracer failed to complete must not pass for a full one."""
    found = recording.tracer_errors
    if found:
        where = ", ".join(f"{name} ×{count}" for name, count in sorted(found.items()))
        item.warn(
            pytest.PytestWarning(
                f"wstrace: {sum(found.values())} internal tracer error(s) during this test, "
                f"contained, so the app ran on but the trace may miss what they would have "
                f"recorded ({where})"
            )
        )


def _keep(item: pytest.Item, recording: WsTrace) -> None:
    directory = item.config.getoption("wstrace_dir")
    if not directory:
        return
    reports = item.stash.get(_reports, {})
    failed = any(report.failed for report in reports.values())
    if not failed and item.config.getoption("wstrace_keep") != KEEP_ALL:
        return
    with contextlib.suppress(Exception):
        recording.settle(timeout=2.0)  # what is still open is kept as it is
    path = recording.write(Path(directory) / trace_file_name(item.nodeid))
    if path is None:
        return
    item.config.stash[_kept].append(path)
    item.config.hook.pytest_wstrace_trace_kept(item=item, path=path)


def trace_file_name(nodeid: str) -> str:
    """``tests/test_app.py::test_bid[h11-wsproto]`` → ``tests-test_app.py-test_bid-h11-wsproto``."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", nodeid).strip("-.") or "test"
    if len(safe) > 120:
        digest = hashlib.sha1(nodeid.encode()).hexdigest()[:10]
        safe = f"{safe[:108]}-{digest}"
    return safe + ".otlp.jsonl"
