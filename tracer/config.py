"""What the user asked the tracer to record, validated once."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from tracer import vocab

DEFAULT_HEADER_ALLOWLIST: frozenset[str] = frozenset(
    {
        "host",
        "origin",
        "user-agent",
        "upgrade",
        "connection",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
"""Request headers recorded by default.  Everything else needs an explicit allowlist entry."""

SENSITIVE_HEADERS: frozenset[str] = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie"}
)
"""Recorded as ``[redacted]`` even when allowlisted, unless ``capture_secrets=True``."""

REDACTED = "[redacted]"


@dataclass(frozen=True, slots=True)
class TracerConfig:
    """Options shared by the server hooks and the ASGI middleware.

    ``shape``: ``"connection"`` puts every stage and message of a connection in one trace;
    ``"message"`` gives each received message its own trace, linked to the handshake.
    ``frames``: ``"spans"`` (one span per frame), ``"events"`` (events on the message span,
    cheaper) or ``"off"``.
    ``capture_payload``: bytes of each frame's payload to keep as a preview; 0 keeps none.
    ``max_messages_per_trace``: in ``connection`` shape, messages past this count go to their
    own linked traces so that a long-lived connection's trace stays bounded.
    ``message_sampling``: in ``message`` shape, ``"inherit"`` follows the connection's sampling
    decision, ``"independent"`` lets the sampler decide for each message trace.
    ``propagate_context``: hand the connection's trace context to the app in ``traceparent`` /
    ``tracestate`` (so FastAPI's native telemetry and other header-based instrumentations join
    the connection's trace); ``False`` leaves the app's scope exactly as the server made it.
    """

    shape: str = vocab.SHAPE_CONNECTION
    frames: str = vocab.FRAMES_SPANS
    capture_payload: int = 0
    redact_payload: Callable[[bytes], bytes] | None = None
    capture_headers: frozenset[str] = DEFAULT_HEADER_ALLOWLIST
    capture_secrets: bool = False
    max_messages_per_trace: int = 1000
    message_sampling: str = "inherit"
    max_frames_per_message: int = 256
    handshake_stack: bool = True
    propagate_context: bool = True

    def __post_init__(self) -> None:
        if self.shape not in vocab.SHAPES:
            raise ValueError(f"shape must be one of {vocab.SHAPES}, not {self.shape!r}")
        if self.frames not in vocab.FRAME_MODES:
            raise ValueError(f"frames must be one of {vocab.FRAME_MODES}, not {self.frames!r}")
        if self.capture_payload < 0:
            raise ValueError("capture_payload must be >= 0")
        if self.max_messages_per_trace < 1:
            raise ValueError("max_messages_per_trace must be >= 1")
        if self.message_sampling not in ("inherit", "independent"):
            raise ValueError("message_sampling must be 'inherit' or 'independent'")

    @classmethod
    def build(
        cls, *, capture_headers: Iterable[str] | None = None, **options: object
    ) -> TracerConfig:
        if capture_headers is not None:
            options["capture_headers"] = frozenset(h.lower() for h in capture_headers)
        return cls(**options)  # type: ignore[arg-type]

    def subprotocol(self, value: str) -> str:
        """The negotiated subprotocol as recorded: redacted like the request header."""
        return value if self.capture_secrets else redact_subprotocols(value)

    def header_attributes(
        self, prefix: str, headers: Iterable[tuple[str, str]]
    ) -> dict[str, tuple[str, ...]]:
        """Allowlisted headers as ``http.request.header.<name>`` attributes, secrets redacted."""
        found: dict[str, list[str]] = {}
        for name, value in headers:
            name = name.lower()
            if name not in self.capture_headers:
                continue
            if not self.capture_secrets:
                if name in SENSITIVE_HEADERS:
                    value = REDACTED
                elif name == "sec-websocket-protocol":
                    value = redact_subprotocols(value)
            found.setdefault(prefix + name, []).append(value)
        return {key: tuple(values) for key, values in found.items()}


_KNOWN_SUBPROTOCOL = re.compile(r"[a-z][a-z0-9]*([._/-][a-z0-9]+)*", re.IGNORECASE)
_CREDENTIAL_MARKERS = ("bearer", "token", "auth", "key", "secret", "session", "jwt", "password")


def redact_subprotocols(value: str) -> str:
    """Browsers cannot set ``Authorization`` on a WebSocket, so tokens travel in
    ``Sec-WebSocket-Protocol`` (``access_token, eyJhbGc…``).  Each listed token that looks like
    a credential — long or random-looking, or following a token that names one — is replaced
    by ``[redacted]``; protocol names such as ``graphql-ws`` or ``v12.stomp`` stay readable."""
    tokens = [token.strip() for token in value.split(",")]
    shown = []
    previous_names_secret = False
    for token in tokens:
        lowered = token.lower()
        secret = (
            previous_names_secret
            or len(token) > 32
            or not _KNOWN_SUBPROTOCOL.fullmatch(token)
            or (len(token) >= 12 and sum(c.isdigit() for c in token) >= 4)
            or lowered.startswith(("bearer", "basic"))
        )
        shown.append(REDACTED if secret else token)
        previous_names_secret = any(marker in lowered for marker in _CREDENTIAL_MARKERS)
    return ", ".join(shown)
