"""What an output's objects do in a process forked from theirs.

A fork copies the memory of every object, but only the thread that called ``fork()``: a
writer thread is gone, a lock another thread held stays held, and a pipe to an export process
is open in both processes — so the export process would never see its input end while the
forked process lives, and the forked process's flush would read the parent's reports.  Each
output remakes itself in the child as it would be new (the OpenTelemetry SDK's batch span
processor does the same), leaving what the parent holds to the parent.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable


def remake_after_fork(method: Callable[[], None]) -> None:
    """Call the bound ``method`` in every process forked from this one, while its object
    lives (held weakly: registering must not keep an output alive)."""
    if not hasattr(os, "register_at_fork"):
        return
    held = weakref.WeakMethod(method)

    def after_in_child() -> None:
        bound = held()
        if bound is not None:
            bound()

    os.register_at_fork(after_in_child=after_in_child)
