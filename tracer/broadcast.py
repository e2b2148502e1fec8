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

from typing import Any

from tracer.asgi import asgi_broadcast, in_asgi_chain
from tracer.recorder import current_handling, server_broadcast


class broadcast:  # lower case: the API reads as a function, ``with tracer.broadcast():``
    """Group the sends made inside the block into one ``ws.broadcast`` span."""

    __slots__ = ("_inner",)

    def __enter__(self) -> None:
        inner: Any
        if current_handling() is None and in_asgi_chain():  # traced by the middleware alone
            inner = asgi_broadcast()
            if inner.__enter__():
                self._inner = inner
                return
            inner.__exit__(None, None, None)
        inner = server_broadcast()
        inner.__enter__()
        self._inner = inner

    def __exit__(self, *exc_info: Any) -> Any:
        return self._inner.__exit__(*exc_info)
