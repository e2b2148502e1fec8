"""Emitters: where a connection's recorded facts become spans, one module per stage family.

- :mod:`~tracer.recorder.emit.handshake`: header parse, upgrade detection, protocol switch, the
  opening handshake with its validation and response, ``ws.accept`` with the handshake stack;
- :mod:`~tracer.recorder.emit.messages`: received messages and their frames, sends, fan-out
  (``ws.broadcast``), control frames, messages never delivered to the app;
- :mod:`~tracer.recorder.emit.close`: the close and the end of the connection span.

Each takes a :class:`~tracer.recorder.connection.ConnectionRecord` (its facts) and builds spans
only through its :class:`~tracer.recorder.Recorder` (``start`` for a span with children,
``span`` for a finished leaf): there is no other way to make a span here.  The record decides
*when* (its phase); the emitters decide *what*.
"""
