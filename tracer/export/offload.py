"""Export from a child process: the traced server only copies finished spans out.

Encoding a span as OTLP takes microseconds of Python work per span (``python -m bench.encode``
times it).  On a span processor's thread it still holds the GIL, so every microsecond of it is
taken from the server's event loop.  :class:`SubprocessExporter` is a ``SpanExporter`` for any
span processor that pickles each batch of finished spans down a pipe (C code, a few µs a span)
and lets a child process run the real exporter —
:class:`~tracer.export.otlp_file.OTLPJsonFileExporter`, the OTLP/HTTP exporter, any
``SpanExporter`` the child can import::

    exporter = SubprocessExporter.otlp_file(directory="traces")
    provider.add_span_processor(ExportPipeline(exporter))  # tracer.export.pipeline

The pipe is the only buffer between the two: when the child falls behind, writes block the
span processor's thread (never the event loop), and spans wait in the processor's buffer
(:class:`~tracer.export.pipeline.ExportPipeline`: bounded in bytes, every drop counted).  If
the child dies, exports fail and are logged once; the server carries on.

Wire format, parent → child (stdin): messages of a 4-byte big-endian length, then a byte that
says how the rest is encoded (see :func:`_dumps`: ``m``, :mod:`marshal`, for a chunk of message
templates alone; ``p``, pickle, for anything else), then a tuple whose first item says what it
is:

- ``("config", "module:factory", kwargs)`` — once, first: build the real exporter;
- ``("spans", [ReadableSpan or fact, ...], last, origins)`` — part of one export batch,
  exported with the parts before it when ``last``.  A span comes either as a ``ReadableSpan``
  (see :data:`_REDUCERS` for how SDK-internal objects, which hold locks, travel) or as a
  :mod:`~tracer.export.facts` fact, a plain tuple the child turns into the ``ReadableSpan``;
  ``origins`` maps the origin numbers of facts the child has not seen yet to their
  ``(resource, scope)`` (``None`` when there are none): each travels once per child;
- ``("flush", n)`` — export what came before, then write ``n exported failed`` as a line on
  stdout (spans exported and failed so far).

End of input means shut down: the child shuts its exporter down, writes ``end exported
failed`` on stdout and exits.  So the parent knows how many of the spans it sent were really
exported (:meth:`SubprocessExporter.outcome`), even when the child had to be stopped.
"""

from __future__ import annotations

import contextlib
import copyreg
import gc
import io
import logging
import marshal
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from importlib import import_module
from pathlib import Path
from typing import Any, BinaryIO

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, TraceFlags

from tracer.export import facts, priority
from tracer.export.forks import remake_after_fork

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
SPANS_PER_MESSAGE = 200
"""Spans pickled at a time.  Pickling holds the GIL (a few µs a span, so about half a
millisecond a chunk): a batch of thousands in one go would stall the server's event loop for
longer, so a batch travels in chunks, and the GIL is handed back between them.  Each chunk
costs a pipe write and a hand-off of the GIL (and, for spans sent as ReadableSpan objects,
their resource and scope pickled again; facts carry a number instead), so chunks are not made
smaller than that.  The child exports the batch as one."""
_YOUNG_COLLECTION_EVERY = 7000
"""Allocations between young collections in the export process (the default is 700)."""
_GIVE_WAY = "--give-way"
"""The export process's argument: it runs at the lowest CPU priority while it keeps up."""
OTLP_FILE_FACTORY = "tracer.export.otlp_file:OTLPJsonFileExporter"
OTLP_HTTP_FACTORY = "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter"
_AUTO_INSTRUMENTATION = os.path.join("opentelemetry", "instrumentation", "auto_instrumentation")


class SubprocessExporter(SpanExporter):
    """Hand spans to ``factory(**kwargs)`` running in a child Python process.

    ``factory`` is ``"module:callable"`` returning a ``SpanExporter``; ``kwargs`` must be
    picklable.  The child is started on the first export, and a forked process starts its own
    on its first (:mod:`tracer.export.forks`), so each process has its own.  Thread-safe.
    """

    path: Path | None = None
    """The file written, for exporters made by :meth:`otlp_file`."""
    @property
    def rebuilds_spans(self) -> bool:
        """Whether :meth:`export` takes :mod:`~tracer.export.facts` facts as well as spans (the
        child builds their ``ReadableSpan``\\s; see
        :meth:`tracer.export.pipeline.ExportPipeline.takes_facts`).  Not for a subclass with
        an ``export`` of its own, which may look at what it is given: it opts in by setting
        ``rebuilds_spans = True`` on its class."""
        return type(self).export is SubprocessExporter.export

    def __init__(self, factory: str, *, give_way: bool = True, **kwargs: Any) -> None:
        """``give_way``: the export process runs at the lowest CPU priority while it keeps up
        (Linux; see :mod:`tracer.export.priority`)."""
        self._factory = factory
        self._kwargs = kwargs
        self._give_way = give_way
        self._pipe: priority.ChildPipe | None = None
        self._lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        self._flushes = 0
        self._failed = False
        self._shutdown = False
        self._named: tuple[Path, str] | None = None  # (directory, prefix) of a default name
        self._sent = 0  # spans sent to the current child
        self._flushed = -1  # what _sent was at the current child's last flush
        self._confirmed = (0, 0)  # (exported, failed) as the child last reported
        self._origins_sent: set[int] = set()  # origin numbers the current child knows
        remake_after_fork(self._forget_parents_child)

    @classmethod
    def otlp_file(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        directory: str | os.PathLike[str] = "traces",
        prefix: str = "wstrace",
        give_way: bool = True,
    ) -> SubprocessExporter:
        """An :class:`~tracer.export.otlp_file.OTLPJsonFileExporter` in a child process.

        The file is named here (with this process's id), so :attr:`path` is known at once.
        """
        from tracer.export.otlp_file import default_file_name

        target = Path(path) if path is not None else Path(directory) / default_file_name(prefix)
        exporter = cls(OTLP_FILE_FACTORY, give_way=give_way, path=str(target))
        exporter.path = target
        if path is None:
            exporter._named = (Path(directory), prefix)
        return exporter

    @property
    def child_pid(self) -> int | None:
        """The child's process id, once started (for CPU accounting of the export work)."""
        return self._child.pid if self._child is not None else None

    # --- SpanExporter -------------------------------------------------------------------------

    def export(self, spans: Sequence[ReadableSpan | facts.Fact]) -> SpanExportResult:
        """Send ``spans`` (``ReadableSpan``\\s, facts, or both) to the child, which exports
        them in one call of its exporter."""
        if not spans:
            return SpanExportResult.SUCCESS
        with self._lock:
            if self._shutdown or self._failed:
                return SpanExportResult.FAILURE
            try:
                self._ensure_child()
                for first in range(0, len(spans), SPANS_PER_MESSAGE):
                    chunk = list(spans[first : first + SPANS_PER_MESSAGE])
                    last = first + SPANS_PER_MESSAGE >= len(spans)
                    templates = facts.all_templates(chunk)  # the bulk of a busy server's
                    origins = self._new_origins(chunk, templates)
                    try:
                        payload = _dumps(("spans", chunk, last, origins), templates)
                    except (pickle.PicklingError, TypeError, AttributeError, ValueError):
                        # Something in an attribute pickle cannot carry: send plain copies.
                        payload = _dumps(("spans", [_plain_item(s) for s in chunk], last, origins))
                    self._send_payload(payload)
                    self._sent += (
                        facts.templates_spans(chunk)
                        if templates
                        else sum(facts.span_count(item) for item in chunk)
                    )
                    if not last:  # let the server's event loop have the GIL between chunks
                        time.sleep(0)
            except Exception as exc:
                return self._fail("export", exc)
        return SpanExportResult.SUCCESS

    def _new_origins(
        self, chunk: list[Any], templates: bool = False
    ) -> dict[int, tuple[Any, Any]] | None:
        """``(resource, scope)`` of the facts' origins in ``chunk`` the child has not had
        (``templates``: every item is a template)."""
        known = self._origins_sent
        if templates:
            new = facts.templates_origins(chunk) - known
        else:
            new = {item[facts.ORIGIN] for item in chunk if type(item) is tuple} - known
        if not new:
            return None
        known.update(new)
        return {number: facts.origin_parts(number) for number in new}

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the child has exported everything sent so far (at once when nothing
        was sent since its last flush: a flush behind a pipeline's, which flushes its
        exporter, costs nothing)."""
        with self._lock:
            if self._child is None or self._failed:
                return not self._failed
            if self._sent == self._flushed:
                return True
            self._flushes += 1
            ticket = self._flushes
            sent = self._sent
            if self._pipe is not None:
                self._pipe.catch_up()  # waited for: no longer background work
            try:
                self._send_payload(_dumps(("flush", ticket)))
                flushed = self._await_ticket(ticket, timeout_millis / 1000)
                if flushed:
                    self._flushed = sent
                return flushed
            except Exception as exc:
                self._fail("flush", exc)
                return False

    def shutdown(self, timeout_millis: int = 30000) -> None:
        """Close the pipe and wait (at most ``timeout_millis``) for the child to export the
        rest and exit; then stop it.  :meth:`outcome` says what that cost."""
        deadline = time.monotonic() + timeout_millis / 1000
        if not self._lock.acquire(timeout=timeout_millis / 1000):
            # An export is stuck writing to a child that does not read (a collector that is
            # down): stopping the child makes that write fail at once.
            stuck = self._child
            if stuck is not None:
                logger.warning("wstrace export process is not reading; stopping it")
                stuck.kill()
            self._lock.acquire()
        try:
            if self._shutdown:
                return
            self._shutdown = True
            child, self._child = self._child, None
        finally:
            self._lock.release()
        if child is None:
            return
        if self._pipe is not None:
            self._pipe.catch_up()
        try:
            if child.poll() is None and child.stdin is not None:
                child.stdin.close()
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except (OSError, subprocess.TimeoutExpired) as exc:
            logger.warning("wstrace export process did not finish (%r); stopping it", exc)
            child.kill()
            child.wait()
        finally:
            self._read_reports(child)
            if child.stdout is not None:
                child.stdout.close()

    def _forget_parents_child(self) -> None:
        """In a process just forked from this one: the export process is the parent's.

        This process's ends of its pipes are closed here, with nothing written or flushed, so
        that it ends when the parent closes its own, and no flush or shutdown of this process
        ever reaches it; the first export of this process starts an export process of its own
        (:meth:`_ensure_child`).  The lock is made anew: another thread of the parent may have
        held it when it forked.  A file named by default gets a name of its own, as the file
        exporter would.

        Nothing here may block: ``subprocess`` runs this too, between its ``fork()`` and
        ``exec()`` when given a ``preexec_fn``."""
        self._lock = threading.Lock()
        if self._named is not None:
            from tracer.export.otlp_file import default_file_name

            directory, prefix = self._named
            self.path = directory / default_file_name(prefix)
            self._kwargs["path"] = str(self.path)
        child, self._child, self._pipe = self._child, None, None
        if child is None:
            return
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                with contextlib.suppress(OSError, ValueError):
                    stream.close()  # this process's copy: unbuffered, so closing takes no lock
        child.returncode = 0  # not this process's child: never to be waited for here

    @property
    def fell_behind(self) -> int:
        """How many times the current export process, giving way to the server, fell behind
        and was put back at normal priority (:mod:`tracer.export.priority`)."""
        return self._pipe.fell_behind if self._pipe is not None else 0

    def outcome(self) -> tuple[int, int, int]:
        """``(exported, failed, sent)``: spans the child reported exported and failed, and
        spans sent to it.  Final after :meth:`shutdown`; the difference was lost with it."""
        exported, failed = self._confirmed
        return exported, failed, self._sent

    def _read_reports(self, child: subprocess.Popen[bytes]) -> None:
        """The child's last ``exported failed`` counts, from what is left on its stdout."""
        if child.stdout is None:
            return
        try:
            rest = child.stdout.read()
        except (OSError, ValueError):
            return
        for line in rest.splitlines():
            self._note_report(line)

    def _note_report(self, line: bytes) -> None:
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
            self._confirmed = (int(parts[1]), int(parts[2]))

    # --- internals ----------------------------------------------------------------------------

    def _ensure_child(self) -> None:
        if self._child is not None:
            return
        self._sent = 0
        self._flushed = -1
        self._confirmed = (0, 0)
        self._origins_sent = set()
        give_way = self._give_way and priority.can_give_way()
        self._child = child = subprocess.Popen(
            [sys.executable, "-m", "tracer.export.offload", *([_GIVE_WAY] if give_way else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=_child_environment(),
            close_fds=True,
            bufsize=0,  # raw files hold no lock a forked process could find held
        )
        assert child.stdin is not None
        self._pipe = priority.ChildPipe(child.stdin.fileno(), child.pid if give_way else 0)
        self._send_payload(_dumps(("config", self._factory, self._kwargs)))

    def _send_payload(self, payload: bytes) -> None:
        assert self._pipe is not None
        self._pipe.write(_LENGTH.pack(len(payload)) + payload)

    def _await_ticket(self, ticket: int, timeout: float) -> bool:
        assert self._child is not None and self._child.stdout is not None
        out = self._child.stdout
        # poll, not select: a server with a thousand connections open when its export
        # process started has handed that process descriptors select() cannot watch.
        waiting = select.poll()
        waiting.register(out, select.POLLIN)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if not waiting.poll(remaining * 1000):
                return False
            line = out.readline()
            if not line:
                raise EOFError("export process exited")
            self._note_report(line)
            if line.startswith(b"end"):
                raise EOFError("export process exited")
            if int(line.split()[0]) >= ticket:
                return True

    def _fail(self, where: str, exc: BaseException) -> SpanExportResult:
        if not self._failed:
            code = self._child.poll() if self._child is not None else None
            logger.error(
                "wstrace export process failed during %s (%r, exit status %s); "
                "spans are dropped from now on",
                where,
                exc,
                code,
            )
        self._failed = True
        return SpanExportResult.FAILURE


def _child_environment() -> dict[str, str]:
    """This environment without ``opentelemetry-instrument``'s start-up hook: the export
    process must not instrument (or configure tracing for) itself."""
    env = dict(os.environ)
    path = env.get("PYTHONPATH")
    if path:
        kept = [p for p in path.split(os.pathsep) if _AUTO_INSTRUMENTATION not in p]
        env["PYTHONPATH"] = os.pathsep.join(kept)
    return env


# --- Pickling spans ---------------------------------------------------------------------------
#
# A ``ReadableSpan`` pickles as its instance dictionary, in C.  A few SDK objects it may refer
# to hold a lock (which cannot be pickled) and travel as what they contain instead.  pickle
# keeps one copy of an object it has seen in the same batch, so the resource and the scope
# are written once per batch, and their reducers run once per batch too.


def _bounded_attributes(attributes: dict[str, Any], maxlen: int | None, dropped: int) -> Any:
    if not dropped:
        return attributes
    bounded = BoundedAttributes(maxlen=maxlen, attributes=attributes, immutable=False)
    bounded.dropped = dropped
    return bounded


def _reduce_bounded_attributes(attributes: BoundedAttributes) -> tuple[Any, ...]:
    if not attributes.dropped:
        return dict, (dict(attributes._dict),)
    return _bounded_attributes, (dict(attributes._dict), attributes.maxlen, attributes.dropped)


def _bounded_list(items: list[Any], maxlen: int | None, dropped: int) -> Any:
    bounded = BoundedList(maxlen)
    for item in items:
        bounded.append(item)
    bounded.dropped = dropped
    return bounded


def _reduce_bounded_list(items: BoundedList) -> tuple[Any, ...]:
    content = list(items._dq)
    if not items.dropped:
        return list, (content,)
    return _bounded_list, (content, items._dq.maxlen, items.dropped)


def _reduce_resource(resource: Resource) -> tuple[Any, ...]:
    return Resource, (dict(resource.attributes), resource.schema_url)


def _reduce_scope(scope: InstrumentationScope) -> tuple[Any, ...]:
    attributes = dict(scope.attributes) if scope.attributes else None
    return InstrumentationScope, (scope.name, scope.version, scope.schema_url, attributes)


def _readable(span: ReadableSpan, attributes: Any = None, events: Any = None) -> ReadableSpan:
    """A plain ``ReadableSpan`` with ``span``'s content (the SDK's live span holds a lock)."""
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=span._attributes if attributes is None else attributes,  # keeps dropped
        events=span._events if events is None else events,
        links=span._links,
        kind=span.kind,
        status=span.status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _rebuild_span(
    name: str,
    trace_id: int,
    context: tuple[int, bool, int, Any],
    parent: tuple[int | None, int, bool, int, Any] | None,
    fields: tuple[Any, ...],
) -> ReadableSpan:
    """The child's half of :func:`_reduce_span`."""
    span_id, remote, flags, state = context
    parent_context = None
    if parent is not None:
        parent_trace, parent_id, parent_remote, parent_flags, parent_state = parent
        parent_context = SpanContext(
            trace_id if parent_trace is None else parent_trace,
            parent_id,
            parent_remote,
            TraceFlags(parent_flags),
            parent_state,
        )
    kind, start, end, attributes, events, links, resource, scope, status, info = fields
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, remote, TraceFlags(flags), state),
        parent=parent_context,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=kind,
        instrumentation_info=info,
        status=status,
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def _reduce_span(span: ReadableSpan) -> tuple[Any, ...]:
    """A span as plain fields: pickling its instance dictionary as it is would go through
    ``SpanContext.__getnewargs__`` (Python) twice a span; this is twice as fast."""
    d = span.__dict__
    context = d["_context"]
    parent = d["_parent"]
    trace_id = context[0]
    return _rebuild_span, (
        d["_name"],
        trace_id,
        (context[1], context[2], int(context[3]), context[4]),
        None
        if parent is None
        else (
            None if parent[0] == trace_id else parent[0],
            parent[1],
            parent[2],
            int(parent[3]),
            parent[4],
        ),
        (
            d["_kind"],
            d["_start_time"],
            d["_end_time"],
            d["_attributes"],
            d["_events"],
            d["_links"],
            d["_resource"],
            d["_instrumentation_scope"],
            d["_status"],
            d.get("_instrumentation_info"),
        ),
    )


def _reduce_sdk_span(span: SdkSpan) -> tuple[Any, ...]:
    return _reduce_span(_readable(span))


_REDUCERS = {
    ReadableSpan: _reduce_span,
    BoundedAttributes: _reduce_bounded_attributes,
    BoundedList: _reduce_bounded_list,
    Resource: _reduce_resource,
    InstrumentationScope: _reduce_scope,
    SdkSpan: _reduce_sdk_span,
}
_DISPATCH = {**copyreg.dispatch_table, **_REDUCERS}


_MARSHALLED = b"m"
_PICKLED = b"p"


def _dumps(message: tuple[Any, ...], templates: bool | None = None) -> bytes:
    """``message`` as the child reads it (:func:`_loads`), behind the byte that says how.

    A chunk of message templates alone (the bulk of a busy server's spans) is plain data made
    by wstrace — tuples, dicts, numbers, text — which :mod:`marshal` writes in about half the
    time pickle takes: this runs on the server's CPU for every message.  Anything else goes
    by pickle: other facts may hold values an app set, which marshal could change (it writes
    a ``bytearray`` as ``bytes``) or refuses (an ``IntEnum``: then pickle too).  The child
    runs the same interpreter, so marshal's format is the same at both ends.  ``templates``:
    whether the message's spans are all templates, when the caller knows already."""
    if templates is None:
        templates = message[0] == "spans" and all(
            type(item) is tuple and facts.is_template(item) for item in message[1]
        )
    if templates:
        with contextlib.suppress(ValueError):
            return _MARSHALLED + marshal.dumps(message)
    buffer = io.BytesIO()
    buffer.write(_PICKLED)
    pickler = pickle.Pickler(buffer, pickle.HIGHEST_PROTOCOL)
    pickler.dispatch_table = _DISPATCH
    pickler.dump(message)
    return buffer.getvalue()


def _loads(payload: bytes) -> tuple[Any, ...]:
    """A message written by :func:`_dumps`."""
    body = memoryview(payload)[1:]
    if payload[:1] == _MARSHALLED:
        message: tuple[Any, ...] = marshal.loads(body)
    else:
        message = pickle.loads(body)
    return message


_PLAIN = (str, bool, int, float, bytes, type(None))


def _plain(value: Any) -> Any:
    if isinstance(value, _PLAIN):
        return value
    if isinstance(value, (list, tuple)):
        return tuple(v if isinstance(v, _PLAIN) else str(v) for v in value)
    return str(value)


def _plain_attributes(attributes: Any) -> dict[str, Any]:
    return {str(key): _plain(value) for key, value in (attributes or {}).items()}


def _plain_span(span: ReadableSpan) -> ReadableSpan:
    """``span`` with every attribute value a plain one (unknown types become ``str``)."""
    events = [
        Event(event.name, _plain_attributes(event.attributes), event.timestamp)
        for event in span.events
    ]
    return _readable(span, attributes=_plain_attributes(span.attributes), events=events)


def _plain_item(item: ReadableSpan | facts.Fact) -> ReadableSpan | facts.Fact:
    """A span or a fact with every attribute value a plain one."""
    if type(item) is tuple:
        return facts.plain(item, _plain)
    return _plain_span(item)  # type: ignore[arg-type]


# --- The child ----------------------------------------------------------------------------------


def _read_message(stream: BinaryIO) -> tuple[Any, ...] | None:
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (length,) = _LENGTH.unpack(head)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return _loads(payload)


def _build_exporter(factory: str, kwargs: dict[str, Any]) -> SpanExporter:
    module, _, name = factory.partition(":")
    exporter: SpanExporter = getattr(import_module(module), name)(**kwargs)
    return exporter


FactExpander = Callable[[facts.Fact, dict[int, Any]], list[Any]]
"""An exporter's ``expand_fact(item, origins)``: what its ``export_facts`` takes for a family
fact (see :class:`~tracer.export.otlp_file.OTLPJsonFileExporter`)."""


def _expand(item: facts.Fact, origins: dict[int, Any]) -> list[Any]:
    return facts.expand(item)


def _rebuild_into(
    batch: list[Any],
    items: list[Any],
    origins: dict[int, Any],
    keep_facts: bool = False,
    expand: FactExpander = _expand,
) -> tuple[int, int]:
    """Add ``items`` to ``batch``: facts built into spans or, with ``keep_facts`` (an
    exporter that writes facts itself), checked and kept as plain span facts, families as
    ``expand`` makes them; returns how many spans were added and how many could not be
    (logged and counted as failed: one bad fact must not end the export process)."""
    added = failed = 0
    for item in items:
        if type(item) is not tuple:
            batch.append(item)
            added += 1
            continue
        try:
            if len(item) <= facts.SPANS:
                if keep_facts:
                    facts.check(item, origins)
                batch.append(item if keep_facts else facts.rebuild(item, origins))
            elif keep_facts:
                spans = expand(item, origins)
                for fact in spans:
                    if type(fact) is tuple:  # (not spans the exporter has written already)
                        facts.check(fact, origins)
                batch.extend(spans)
            else:
                batch.extend([facts.rebuild(fact, origins) for fact in facts.expand(item)])
            added += facts.span_count(item)
        except Exception:
            if not failed:
                logger.exception("wstrace export process: a span could not be rebuilt")
            failed += facts.span_count(item)
    return added, failed


def _tune_collector() -> None:
    """The export process makes a batch of spans, exports it and lets it go: almost nothing it
    allocates lives long, yet with the default thresholds the cyclic collector runs every 700
    allocations and walks each span of the batch in hand again and again.  What exists once
    the exporter is built (modules, the exporter) is set aside for good (``gc.freeze``), and
    young collections run ten times less often (reference counting frees the batches); the
    older generations keep their thresholds, so cyclic garbage is still collected."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(_YOUNG_COLLECTION_EVERY, older, oldest)


class _ExportSession:
    """The export process's exporter and the batch it is receiving (see :func:`child_main`)."""

    def __init__(self, exporter: SpanExporter, stdout: BinaryIO) -> None:
        self.exporter = exporter
        self.stdout: BinaryIO | None = stdout  # None once the server is gone
        self.batch: list[Any] = []
        self.exported = self.failed = 0
        self.in_batch = 0  # spans in the batch
        self.origins: dict[int, tuple[Any, Any]] = {}  # of facts: (resource, scope) by number
        # wstrace's file exporter writes facts as they are (families expanded its own way);
        # any other gets ReadableSpans.
        self.export_facts = getattr(exporter, "export_facts", None)
        self.expand = getattr(exporter, "expand_fact", _expand)

    def take_spans(self, items: list[Any], last: bool, origins: dict[int, Any] | None) -> None:
        """Part of a batch; the batch is exported with it when ``last``."""
        if origins:
            self.origins.update(origins)
        added, failed = _rebuild_into(
            self.batch, items, self.origins, keep_facts=self.export_facts is not None,
            expand=self.expand,
        )  # fmt: skip
        self.failed += failed
        self.in_batch += added
        if last:
            self.export()

    def export(self) -> None:
        spans, self.batch = self.batch, []
        try:
            if self.export_facts is not None:
                ok = self.export_facts(spans, self.origins) is SpanExportResult.SUCCESS
            else:
                ok = self.exporter.export(spans) is SpanExportResult.SUCCESS
        except Exception:
            logger.exception("the exporter raised")
            ok = False
        if ok:
            self.exported += self.in_batch
        else:
            self.failed += self.in_batch
        self.in_batch = 0

    def report(self, head: bytes) -> None:
        """``head exported failed`` on stdout: how the parent learns what became of its spans.

        A server killed outright is no longer there to read it; that is no error: its spans
        are written all the same."""
        if self.stdout is None:
            return
        try:
            self.stdout.write(b"%s %d %d\n" % (head, self.exported, self.failed))
            self.stdout.flush()
        except BrokenPipeError:
            stdout, self.stdout = self.stdout, None
            with contextlib.suppress(OSError, ValueError):
                # What is left in its buffer goes nowhere, not to an error at exit.
                nowhere = os.open(os.devnull, os.O_WRONLY)
                os.dup2(nowhere, stdout.fileno())
                os.close(nowhere)

    def finish(self) -> None:
        if self.batch:  # the parent stopped in the middle of a batch: keep what came
            self.export()
        self.exporter.shutdown()
        self.report(b"end")


def child_main(stdin: BinaryIO, stdout: BinaryIO, give_way: bool = False) -> int:
    """The export process: read messages until end of input, export, shut down.

    ``give_way``: it runs at the lowest CPU priority whenever it has read everything sent
    (:mod:`tracer.export.priority`), and at normal priority while the server waits for it.
    Its exporter is built first, so threads the exporter starts then keep normal priority."""
    first = _read_message(stdin)
    if first is None:
        return 0
    if first[0] != "config":
        logger.error("wstrace export process: expected a config message, got %r", first[0])
        return 2
    session = _ExportSession(_build_exporter(first[1], first[2]), stdout)
    _tune_collector()
    try:
        while True:
            if give_way:
                priority.settle(stdin.fileno())
            message = _read_message(stdin)
            if message is None:
                break
            if message[0] == "spans":
                session.take_spans(message[1], message[2], message[3])
            elif message[0] == "flush":
                if give_way:
                    priority.take_turns()  # the server waits for this
                session.exporter.force_flush()
                session.report(b"%d" % message[1])
    finally:
        if give_way:
            priority.take_turns()  # the server waits for the end
        session.finish()
    return 0


if __name__ == "__main__":
    # Ctrl-C reaches the whole process group: the server shuts down and closes the pipe,
    # and only then may this process finish, with everything written.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # likewise when the group is terminated
    logging.basicConfig(level=logging.WARNING, format="wstrace export: %(message)s")
    sys.exit(child_main(sys.stdin.buffer, sys.stdout.buffer, give_way=_GIVE_WAY in sys.argv[1:]))
