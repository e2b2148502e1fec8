"""Emitters: where a connection's recorded facts become spans, one module per stage family.

- :mod:`~tracer.recorder.emit.handshake`: header parse, upgrade detection, protocol switch, the
  opening handshake with its validation and response, ``ws.accept`` with the handshake stack;
- :mod:`~tracer.recorder.emit.messages`: received messages and their frames, sends, fan-out
  (``ws.broadcast``), control frames, messages never delivered to the app;
- :mod:`~tracer.recorder.emit.close`: the close and the end of the connection span;
- :mod:`~tracer.recorder.emit.templates`: a received message as the values of its spans, on
  ``wstrace serve``'s set-up (its spans are built where they are exported);
- :mod:`~tracer.recorder.emit.fan_out`: which sends of a handling went out as a broadcast;
- :mod:`~tracer.recorder.emit.batches`: handled messages emitted a few at a time.

Each takes a :class:`~tracer.recorder.connection.ConnectionRecord` (its facts) and builds spans
only through its :class:`~tracer.recorder.Recorder` (``start`` for a span with children,
``span`` for a finished leaf), or, for a message template, hands the values those spans are
made of (laid out by the same functions, :mod:`tracer.export.message_facts`).  The record
decides *when* (its phase); the emitters decide *what*.
"""
