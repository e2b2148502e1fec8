"""The one error type the auction rules raise."""

from __future__ import annotations


class Rejected(Exception):
    """An input the auction refuses: reported to its sender only, nothing else changes.

    ``code`` is a stable machine-readable word (``bid_too_low``, ``bad_json``, ...); ``reason``
    is the human sentence shown to the user.
    """

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
