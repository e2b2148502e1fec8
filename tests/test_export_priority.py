"""The export process gives way to the server: lowest CPU priority while it keeps up, normal
priority when it falls behind or is waited for, and nothing lost either way (Linux)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tracer.export import priority
from tracer.export.offload import SubprocessExporter

needs_idle_policy = pytest.mark.skipif(
    not priority.can_give_way(),
    reason="SCHED_IDLE, and leaving it (CAP_SYS_NICE or RLIMIT_NICE 20), are Linux's: "
    "elsewhere the export process keeps normal priority",
)


def some_spans(count: int) -> list[ReadableSpan]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("priority")
    for n in range(count):
        with tracer.start_as_current_span(f"span-{n}") as span:
            span.set_attribute("payload", "x" * 200)
    return list(memory.get_finished_spans())


def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.01)
    return check()


def spans_in_file(path: Path) -> int:
    return sum(
        len(scope["spans"])
        for line in path.read_text().splitlines()
        for resource in json.loads(line)["resourceSpans"]
        for scope in resource["scopeSpans"]
    )


@needs_idle_policy
def test_the_export_process_gives_way_once_it_has_read_everything(tmp_path: Path) -> None:
    exporter = SubprocessExporter.otlp_file(tmp_path / "t.otlp.jsonl")
    try:
        exporter.export(some_spans(10))
        assert exporter.force_flush()
        pid = exporter.child_pid
        assert pid is not None
        assert eventually(lambda: priority.gives_way(pid))
    finally:
        exporter.shutdown()
    assert exporter.outcome() == (10, 0, 10)
    assert exporter.fell_behind == 0


@needs_idle_policy
def test_left_waiting_it_runs_at_normal_priority_until_caught_up_and_loses_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.otlp.jsonl"
    exporter = SubprocessExporter.otlp_file(path)
    spans = some_spans(50)
    try:
        exporter.export(spans[:1])
        pid = exporter.child_pid
        assert pid is not None
        assert eventually(lambda: priority.gives_way(pid))
        os.kill(pid, signal.SIGSTOP)  # it reads nothing: the pipe fills, the server waits
        try:
            batch = spans * 40  # some 2,000 spans: far more than the pipe holds
            writer = threading.Thread(target=exporter.export, args=(batch,))
            writer.start()
            assert eventually(lambda: not priority.gives_way(pid))
            assert exporter.fell_behind == 1
            assert writer.is_alive()  # still waiting for room, as a blocking write would
        finally:
            os.kill(pid, signal.SIGCONT)
        writer.join(30)
        assert not writer.is_alive()
        # Everything read: it gives way again, at once, without being waited for.
        assert eventually(lambda: priority.gives_way(pid))
    finally:
        exporter.shutdown()
    sent = 1 + len(batch)
    assert exporter.outcome() == (sent, 0, sent)
    assert spans_in_file(path) == sent


@needs_idle_policy
def test_asked_not_to_give_way_it_keeps_normal_priority(tmp_path: Path) -> None:
    exporter = SubprocessExporter.otlp_file(tmp_path / "t.otlp.jsonl")
    plain = SubprocessExporter.otlp_file(tmp_path / "plain.otlp.jsonl", give_way=False)
    try:
        for one in (exporter, plain):
            one.export(some_spans(3))
        pids = (exporter.child_pid, plain.child_pid)
        assert pids[0] is not None and pids[1] is not None
        # The same moment for both: one has given way by now, the other never does.
        assert eventually(lambda: priority.gives_way(pids[0]))
        assert not priority.gives_way(pids[1])
    finally:
        exporter.shutdown()
        plain.shutdown()
    assert plain.outcome() == (3, 0, 3)


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0,
    reason="needs root on Linux, to become a user without CAP_SYS_NICE",
)
def test_a_process_that_could_not_come_back_never_gives_way() -> None:
    """An unprivileged user with ``RLIMIT_NICE`` 0 may enter ``SCHED_IDLE`` but not leave it:
    such a process must keep its export process at normal priority (or it could starve)."""
    script = (
        "import os, resource, threading\n"
        "from tracer.export import priority\n"
        "resource.setrlimit(resource.RLIMIT_NICE, (0, 0))\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "print(priority.can_give_way(), priority.gives_way())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
