"""The processes around an export process.

A process forked from one that exports (a pre-forking server's workers, a program started with
a ``preexec_fn``): the parent's export process and buffer stay the parent's, the forked process
exports on its own, nothing is lost on either side.  A server killed outright: its export
process writes what it was sent and exits quietly.

Each scenario runs in a fresh interpreter, whose only at-fork hooks are wstrace's: these
scripts make spans without a TracerProvider (its own hooks: tests/conftest.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="fork() is POSIX")

SPANS = r"""
import os, sys, time
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan

def spans(first, count, service):
    resource = Resource({"service.name": service})
    return [
        ReadableSpan(name=f"s{n}", context=trace.SpanContext(7, n + 1, False, trace.TraceFlags(1)),
                     resource=resource, attributes={"n": n}, start_time=n + 1, end_time=n + 2)
        for n in range(first, first + count)
    ]
"""

OWN_FILE_SCRIPT = SPANS + r"""
from tracer.export.offload import SubprocessExporter

exporter = SubprocessExporter.otlp_file(directory=sys.argv[1])
assert exporter.export(spans(0, 10, "parent")).name == "SUCCESS" and exporter.force_flush()
parent_file, parent_export_process = exporter.path, exporter.child_pid
pid = os.fork()
if pid == 0:
    ok = exporter.export(spans(0, 10, "worker")).name == "SUCCESS" and exporter.force_flush()
    own = exporter.child_pid != parent_export_process and exporter.path != parent_file
    exporter.shutdown()
    os._exit(0 if ok and own else 3)
_, status = os.waitpid(pid, 0)
exporter.shutdown()
print(json.dumps({"worker": os.waitstatus_to_exitcode(status)}))
"""

KILLED_SCRIPT = SPANS + r"""
import signal
from tracer.export.offload import SubprocessExporter

exporter = SubprocessExporter.otlp_file(directory=sys.argv[1])
assert exporter.export(spans(0, 10, "parent")).name == "SUCCESS" and exporter.force_flush()
assert exporter.export(spans(10, 10, "parent")).name == "SUCCESS"  # sent, not yet confirmed
os.kill(os.getpid(), signal.SIGKILL)
"""

EXPORTER_SCRIPT = SPANS + r"""
from tracer.export.offload import SubprocessExporter

exporter = SubprocessExporter.otlp_file(directory=sys.argv[1])
assert exporter.export(spans(0, 10, "parent")).name == "SUCCESS" and exporter.force_flush()
export_process = exporter._child
hold_r, hold_w = os.pipe()
pid = os.fork()
if pid == 0:  # a worker that exports nothing of its own, flushes and stops, and lives on
    os.close(hold_w)
    ok = exporter.force_flush()
    exporter.shutdown()
    os.read(hold_r, 1)
    os._exit(0 if ok else 3)
os.close(hold_r)
again = exporter.export(spans(10, 10, "parent")).name == "SUCCESS" and exporter.force_flush()
exporter.shutdown(timeout_millis=20000)  # the worker still lives: its copy of the pipe is shut
os.write(hold_w, b"x")
_, status = os.waitpid(pid, 0)
print(json.dumps({"worker": os.waitstatus_to_exitcode(status), "again": again,
                  "outcome": exporter.outcome(), "export_process": export_process.returncode}))
"""

PIPELINE_SCRIPT = SPANS + r"""
from tracer.export.offload import SubprocessExporter
from tracer.export.pipeline import ExportPipeline

pipeline = ExportPipeline(SubprocessExporter.otlp_file(directory=sys.argv[1]))
for span in spans(0, 10, "parent"):
    pipeline.on_end(span)  # waiting in the buffer when the process forks
pid = os.fork()
if pid == 0:
    for span in spans(100, 5, "worker"):
        pipeline.on_end(span)
    pipeline.shutdown()
    counts = pipeline.counts()
    os._exit(0 if (counts.written, sum(counts.dropped.values())) == (5, 0) else 3)
_, status = os.waitpid(pid, 0)
pipeline.shutdown()
counts = pipeline.counts()
print(json.dumps({"worker": os.waitstatus_to_exitcode(status), "written": counts.written,
                  "dropped": sum(counts.dropped.values())}))
"""

PREEXEC_SCRIPT = SPANS + r"""
import subprocess, threading
from tracer.export.offload import SubprocessExporter
from tracer.export.pipeline import ExportPipeline

pipeline = ExportPipeline(SubprocessExporter.otlp_file(directory=sys.argv[1]))
done = threading.Event()
sent = []  # spans the busy thread gave the pipeline
def busy():  # spans and flushes going on in another thread while the app starts programs
    first = 0
    while not done.is_set():
        for span in spans(first, 20, "parent"):
            pipeline.on_end(span)
        pipeline.force_flush()
        first += 20
    sent.append(first)
worker = threading.Thread(target=busy)
worker.start()
started = 0
for _ in range(40):  # subprocess runs the at-fork hooks between fork and exec here
    started += subprocess.run(["true"], preexec_fn=lambda: None, timeout=20).returncode == 0
done.set()
worker.join()
pipeline.shutdown()
counts = pipeline.counts()
print(json.dumps({"started": started, "written": counts.written - sent[0],
                  "dropped": sum(counts.dropped.values())}))
"""


READING_SCRIPT = SPANS + r"""
import subprocess, threading, time
from tracer.export.offload import SubprocessExporter

exporter = SubprocessExporter.otlp_file(directory=sys.argv[1])
assert exporter.export(spans(0, 10, "parent")).name == "SUCCESS"
# A thread of the parent in the middle of reading the export process's reports, as a flush
# does, when the process forks: what it holds must not hold up the forked process.
reading = threading.Thread(target=exporter._child.stdout.read, args=(1,), daemon=True)
reading.start()
time.sleep(0.2)
started = sum(
    subprocess.run(["true"], preexec_fn=lambda: None).returncode == 0 for _ in range(5)
)
exporter.shutdown()
print(json.dumps({"started": started, "sent": exporter.outcome()[2]}))
"""


def start(script: str, directory: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a fresh interpreter; its output comes once every process that holds
    its stdout or stderr (its export processes too) is done."""
    return subprocess.run(
        [sys.executable, "-c", "import json\n" + script, str(directory)],
        timeout=timeout, capture_output=True, text=True,
    )  # fmt: skip


def run(script: str, directory: Path, timeout: float = 90) -> dict:
    done = start(script, directory, timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "stopping it" not in done.stderr, done.stderr[-3000:]  # no export process killed
    return json.loads(done.stdout.strip().splitlines()[-1])


def services_in(directory: Path) -> list[list[str]]:
    """For each trace file, the service of every span in it."""
    found = []
    for path in sorted(directory.glob("*.otlp.jsonl")):
        services = []
        for line in path.read_text(encoding="utf-8").splitlines():
            for resource in json.loads(line)["resourceSpans"]:
                (service,) = (
                    a["value"]["stringValue"]
                    for a in resource["resource"]["attributes"]
                    if a["key"] == "service.name"
                )
                services += [service] * sum(len(s["spans"]) for s in resource["scopeSpans"])
        found.append(services)
    return found


def test_a_forked_process_exports_through_an_export_process_and_file_of_its_own(
    tmp_path: Path,
) -> None:
    assert run(OWN_FILE_SCRIPT, tmp_path) == {"worker": 0}
    assert sorted(services_in(tmp_path)) == [["parent"] * 10, ["worker"] * 10]


def test_a_server_killed_outright_leaves_an_export_process_that_writes_and_exits_quietly(
    tmp_path: Path,
) -> None:
    """Its input ends with the server: it writes all it was sent, and has no one to report
    to, which is no error."""
    done = start(KILLED_SCRIPT, tmp_path, timeout=60)
    assert done.returncode == -9
    assert "Traceback" not in done.stderr and "Error" not in done.stderr, done.stderr[-3000:]
    assert services_in(tmp_path) == [["parent"] * 20]


def test_a_forked_process_leaves_its_parents_export_process_alone(tmp_path: Path) -> None:
    """Its flush and shutdown do not reach the parent's export process, and its copy of the
    pipe is shut at the fork: the parent's export process ends when the parent closes the pipe,
    even while the forked process lives on, having written everything it was sent."""
    result = run(EXPORTER_SCRIPT, tmp_path)
    assert result == {"worker": 0, "again": True, "outcome": [20, 0, 20], "export_process": 0}
    assert services_in(tmp_path) == [["parent"] * 20]


def test_a_forked_process_exports_its_own_spans_not_its_parents(tmp_path: Path) -> None:
    """The spans waiting at the fork are the parent's to write (once); the forked process's
    pipeline starts empty, with a writer thread and export process of its own."""
    result = run(PIPELINE_SCRIPT, tmp_path)
    assert result == {"worker": 0, "written": 10, "dropped": 0}
    assert sorted(services_in(tmp_path)) == [["parent"] * 10, ["worker"] * 5]


def test_programs_started_with_a_preexec_fn_start_while_spans_are_exported(tmp_path: Path) -> None:
    """``subprocess`` with a ``preexec_fn`` runs the at-fork hooks in a child that only
    execs, here while another thread exports: every program starts, and every span sent is
    written."""
    result = run(PREEXEC_SCRIPT, tmp_path)
    assert result == {"started": 40, "written": 0, "dropped": 0}


def test_a_program_starts_while_the_export_process_is_being_read(tmp_path: Path) -> None:
    """The hooks close the parent's pipes in the forked process without waiting for a lock
    another thread of the parent held at the fork (a hang, before)."""
    result = run(READING_SCRIPT, tmp_path, timeout=30)
    assert result == {"started": 5, "sent": 10}
    assert services_in(tmp_path) == [["parent"] * 10]
