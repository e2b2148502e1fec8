"""Containment of the tracer's own failures: counted and logged once, never raised."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

logger = logging.getLogger("wstrace")


class ErrorCounter:
    """Counts internal errors by where they happened; logs the first of each kind."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def record(self, where: str, exc: BaseException) -> None:
        with self._lock:
            count = self.counts.get(where, 0) + 1
            self.counts[where] = count
        if count == 1:
            logger.warning(
                "wstrace: internal error in %s (contained): %r", where, exc, exc_info=exc
            )

    def call(self, where: str, function: Callable[..., T], *args: Any) -> T | None:
        """``function(*args)``, with any exception it raises recorded here instead."""
        try:
            return function(*args)
        except Exception as exc:
            self.record(where, exc)
            return None

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()


errors = ErrorCounter()
"""Process-wide: tests assert it stays at zero; ``wstrace`` reports it at the end of a run."""
