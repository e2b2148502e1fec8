"""``tracer.broadcast()``: mark an app's fan-out loop as one ``ws.broadcast``.

::

    async def broadcast(self, message, room):
        with tracer.broadcast():
            for connection in self.rooms[room]:
                await connection.send_text(message)

Inside the block every send becomes a ``ws.message.send`` child of one ``ws.broadcast`` span
(``wstrace.broadcast.recipients`` = how many), each tied to its recipient's connection by a
link.  Without the block, the server hooks still detect the usual shape on their own (a run of
sends to distinct connections while one message is handled); the block makes it exact, and
covers broadcasts from background tasks.  With no tracing installed it costs next to nothing.
"""

from __future__ import annotations

from tracer.recorder import broadcast

__all__ = ["broadcast"]
