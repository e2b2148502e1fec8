"""Sans-I/O decoders for the HTTP/1.1 heads of the WebSocket opening handshake.

A WebSocket connection starts as HTTP/1.1 (RFC 6455 §4.1, §4.2): the client sends a request
head, the server answers with a response head, and -- if that answer is ``101 Switching
Protocols`` -- both sides speak frames from the next byte on.  A head is (RFC 9112 §2.1)::

    start-line CRLF
    *( field-name ":" OWS field-value OWS CRLF )
    CRLF

where the start line is ``method SP request-target SP HTTP-version`` for a request (§3) and
``HTTP-version SP status-code SP [ reason-phrase ]`` for a response (§4).

These decoders read exactly that and stop: a handshake has no body, and whatever follows the
blank line (a client may pipeline its first frame right behind the request; a 403 carries a
body) is handed back as :attr:`trailing`.  They are independent of the parser uvicorn uses
(httptools or h11), so a trace shows what was on the wire even when that parser disagrees.

Leniency, following RFC 9112: empty lines before the request line are ignored (§2.2 "SHOULD
ignore at least one empty line"), and a bare LF is accepted as a line terminator (§2.2 "MAY
recognize a single LF"), as h11 does.  Obsolete line folding (a header line starting with
whitespace, §5.2) is rejected, as is whitespace between a field name and its colon (§5.1).
Bad input is never raised: it is reported as a :class:`~tracer.wire.frames.ProtocolError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tracer.wire.frames import ProtocolError

__all__ = [
    "HeadDecoder",
    "RequestHead",
    "RequestHeadDecoder",
    "ResponseHead",
    "ResponseHeadDecoder",
    "is_websocket_upgrade",
    "request_target",
]

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
"""RFC 9110 §5.6.2: ``token = 1*tchar``, the syntax of methods and field names."""

_TCHARS = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([^\x00-\x20\x7f]+) HTTP/([0-9])\.([0-9])")
"""RFC 9112 §3: ``method SP request-target SP HTTP-version``; the target has no whitespace."""

_STATUS_LINE = re.compile(rb"HTTP/([0-9])\.([0-9]) ([0-9]{3})(?: ([\t\x20-\x7e\x80-\xff]*))?")
"""RFC 9112 §4: ``HTTP-version SP status-code SP [ reason-phrase ]``.

The SP after the code is accepted missing (``HTTP/1.1 101``), as most clients do."""

_FIELD_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([\t\x20-\x7e\x80-\xff]*?)[ \t]*")
"""RFC 9112 §5: ``field-name ":" OWS field-value OWS``; values are VCHAR, obs-text, SP, HTAB."""

_FIELD_BLOCK = re.compile(rb"(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r?\n)*")
"""Every field line of a head at once: one check for a well-formed head."""

_HEAD_END = re.compile(rb"\n\r?\n")
_EMPTY_LINE_STARTS = (b"\r", b"\n", b"")
"""First bytes that need the buffered way: empty lines to skip, or nothing at all."""
_HTTP_SLASH = b"HTTP/"


class _HeaderAccess:
    """Header lookups shared by :class:`RequestHead` and :class:`ResponseHead`."""

    __slots__ = ()
    headers: list[tuple[str, str]]

    def header(self, name: str) -> str | None:
        """The value of the first header called ``name`` (case-insensitive), or ``None``."""
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    def header_values(self, name: str) -> list[str]:
        """The values of every header called ``name``, in order."""
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    def header_tokens(self, name: str) -> list[str]:
        """Every comma-separated element of every ``name`` header, stripped and lowercased.

        RFC 9110 §5.3: a field sent as several lines is equivalent to one line with the values
        joined by commas, and list elements may be empty, so ``Connection: keep-alive, Upgrade``
        and two ``Connection`` lines give the same ``["keep-alive", "upgrade"]``.
        """
        tokens: list[str] = []
        for value in self.header_values(name):
            for part in value.split(","):
                part = part.strip(" \t").lower()
                if part:
                    tokens.append(part)
        return tokens


@dataclass(slots=True)
class RequestHead(_HeaderAccess):
    """A request line and its header fields.

    ``http_version`` is ``"1.1"`` (without ``HTTP/``, as ``network.protocol.version`` wants it).
    Header names are lowercased, values decoded as ISO-8859-1 (RFC 9110 §5.5: field values are
    octets, historically Latin-1), order and duplicates kept.  ``length`` is the number of
    stream bytes the head took, including the final blank line and any empty lines ignored
    before the request line: the byte after the head is at stream offset ``length``.
    """

    method: str
    target: str
    http_version: str
    headers: list[tuple[str, str]]
    length: int


@dataclass(slots=True)
class ResponseHead(_HeaderAccess):
    """A status line and its header fields; same conventions as :class:`RequestHead`."""

    http_version: str
    status: int
    reason: str
    headers: list[tuple[str, str]]
    length: int


def request_target(data: bytes, max_head_bytes: int = 65536) -> str | None:
    """The request target of the whole, well-formed request head that ``data`` (the first
    bytes of a stream) starts with, or ``None``.

    Exactly when :class:`RequestHeadDecoder` fed ``data`` would decode a head (with this
    target) from it: checked by the same expressions, without building the head.  Lets a
    caller note the request now and decode it later.
    """
    if data[:1] in _EMPTY_LINE_STARTS:
        return None
    end = _HEAD_END.search(data)
    if end is None or end.end() > max_head_bytes:
        return None
    first = data.find(b"\n") + 1
    stop = first - 2 if data[first - 2 : first - 1] == b"\r" else first - 1
    match = _REQUEST_LINE.fullmatch(data, 0, stop)
    if match is None or _FIELD_BLOCK.fullmatch(data, first, end.start() + 1) is None:
        return None
    return match[2].decode("latin-1")


def is_websocket_upgrade(head: RequestHead) -> bool:
    """Whether ``head`` asks to open a WebSocket (RFC 6455 §4.1, §4.2.1 items 1, 3 and 4).

    The method is GET, ``Upgrade`` lists the ``websocket`` token and ``Connection`` lists
    ``upgrade`` (both case-insensitive).  The key and version are checked separately: see
    :mod:`tracer.wire.handshake`.
    """
    return (
        head.method == "GET"
        and "websocket" in head.header_tokens("upgrade")
        and "upgrade" in head.header_tokens("connection")
    )


class HeadDecoder:
    """Incremental decoder for one HTTP/1.1 head; see :class:`RequestHeadDecoder`.

    :meth:`feed` returns ``None`` while more bytes are needed, then exactly once the head or
    the :class:`ProtocolError` that stopped it, then ``None`` forever after.  The outcome stays
    available as :attr:`result` / :attr:`error`, and the bytes that arrived behind the head in
    the chunk that completed it as :attr:`trailing`.  Bytes fed after that are counted in
    :attr:`bytes_fed` but not kept (memory stays bounded): feed them to the next decoder.
    """

    __slots__ = (
        "_buf",
        "_fed",
        "_first_line_ok",
        "_max",
        "_scan",
        "_skipped",
        "error",
        "result",
        "trailing",
    )

    _start_error = "bad-request-line"

    def __init__(self, *, max_head_bytes: int = 65536) -> None:
        self._max = max_head_bytes
        self._buf = bytearray()
        self._fed = 0
        self._skipped = 0  # empty lines ignored before the start line
        self._first_line_ok = False
        self._scan = 0  # where the search for the blank line resumes
        self.result: RequestHead | ResponseHead | None = None
        self.error: ProtocolError | None = None
        self.trailing = b""

    @property
    def bytes_fed(self) -> int:
        """Total bytes fed so far."""
        return self._fed

    @property
    def done(self) -> bool:
        """Whether the head was decoded or rejected."""
        return self.result is not None or self.error is not None

    def feed(self, data: bytes) -> RequestHead | ResponseHead | ProtocolError | None:
        """Decode the next chunk; see the class docstring for what comes back."""
        self._fed += len(data)
        if self.done:
            return None
        buf = self._buf
        if not buf and data[:1] not in _EMPTY_LINE_STARTS:
            whole = self._whole(data)
            if whole is not None:
                return whole
        buf += data
        if not self._first_line_ok:
            outcome = self._check_start()
            if outcome is not True:
                return outcome
        match = _HEAD_END.search(buf, self._scan)
        if match is None:
            self._scan = max(0, len(buf) - 2)
            if self._skipped + len(buf) > self._max:
                return self._too_large()
            return None
        end = match.end()
        if self._skipped + end > self._max:
            return self._too_large()
        outcome = self._parse(bytes(buf[: match.start() + 1]), self._skipped + end)
        self.trailing = bytes(buf[end:])
        self._buf = bytearray()
        if isinstance(outcome, ProtocolError):
            self.error = outcome
        else:
            self.result = outcome
        return outcome

    def _whole(self, data: bytes) -> RequestHead | ResponseHead | ProtocolError | None:
        """The usual case: a whole head (and maybe more) in the first chunk, nothing buffered.

        Decided exactly as :meth:`feed` would byte by byte (the property tests compare the
        two), without copying the chunk into the buffer first.  ``None`` when the head does
        not end in this chunk within the limit: the chunk then goes the buffered way.
        """
        match = _HEAD_END.search(data)
        if match is None:
            return None
        end = match.end()
        if self._skipped + end > self._max:
            return None
        outcome = self._check_first_bytes(data)
        if outcome is None:
            outcome = self._parse(data[: match.start() + 1], self._skipped + end)
            if isinstance(outcome, ProtocolError):
                self.error = outcome
            else:
                self.result = outcome
            self.trailing = bytes(data[end:])
        return outcome

    def eof(self) -> ProtocolError | None:
        """The stream ended.  ``truncated`` if a head was started but not finished."""
        if self.done or not self._buf:
            return None
        have = len(self._buf)
        return self._fail(
            "truncated", self._skipped, f"stream ended after {have} bytes of the head"
        )

    # --- internals ------------------------------------------------------------------------------

    def _too_large(self) -> ProtocolError:
        """The limit applies to what was seen, whatever the chunking: the outcome for a stream
        depends only on its first ``max_head_bytes + 1`` bytes, never on how they were split."""
        return self._fail("head-too-large", self._max, f"no complete head within {self._max} bytes")

    def _fail(self, kind: str, offset: int, detail: str) -> ProtocolError:
        self.error = ProtocolError(kind, offset, detail)
        self._buf = bytearray()
        return self.error

    def _check_start(self) -> ProtocolError | bool | None:
        """Drop leading empty lines and reject a bad start line as soon as it is complete.

        Returns True when the start line is complete and fine, None if more bytes are needed.
        Checking early matters: bytes that are not HTTP at all (a TLS ClientHello sent to a
        plain-text port) would otherwise sit in the buffer until the size limit.
        """
        buf = self._buf
        i = 0
        while True:
            if buf.startswith(b"\r\n", i):
                i += 2
            elif buf.startswith(b"\n", i):
                i += 1
            else:
                break
        if i:
            del buf[:i]
            self._skipped += i
        if self._skipped > self._max:
            return self._too_large()
        if not buf or buf == b"\r":
            return None
        early = self._check_first_bytes(buf)
        if early is not None:
            return early
        eol = buf.find(b"\n")
        if self._skipped + (len(buf) if eol < 0 else eol + 1) > self._max:
            return self._too_large()
        if eol < 0:
            return None
        line = bytes(buf[:eol]).removesuffix(b"\r")
        if self._start_pattern().fullmatch(line) is None:
            return self._fail(
                self._start_error, self._skipped, f"malformed start line {_show(line)}"
            )
        self._first_line_ok = True
        return True

    def _check_first_bytes(self, buf: bytearray) -> ProtocolError | None:
        raise NotImplementedError

    def _start_pattern(self) -> re.Pattern[bytes]:
        raise NotImplementedError

    def _make_head(
        self, match: re.Match[bytes], headers: list[tuple[str, str]], length: int
    ) -> RequestHead | ResponseHead:
        raise NotImplementedError

    def _parse(self, head: bytes, length: int) -> RequestHead | ResponseHead | ProtocolError:
        """Parse a whole head (start line to the LF that ends the last field line).

        A well-formed head (nearly every one) is checked and split by two regular expressions
        over its whole field block; anything else goes line by line, to say which line is
        wrong and where.
        """
        first = head.find(b"\n") + 1
        stop = first - 2 if head[first - 2 : first - 1] == b"\r" else first - 1
        match = self._start_pattern().fullmatch(head, 0, stop)
        if match is not None and _FIELD_BLOCK.fullmatch(head, first) is not None:
            # A checked block: every line is ``name ":" value [CR] LF``, the name holds no colon
            # and neither holds CR or LF, so splitting on LF and the first colon is exact.
            headers: list[tuple[str, str]] = []
            lines = head[first:-1].decode("latin-1").split("\n") if first < len(head) else ()
            for line in lines:
                name, _, value = line.partition(":")
                headers.append((name.lower(), value.strip(" \t\r")))
            return self._make_head(match, headers, length)
        return self._parse_lines(head, length)

    def _parse_lines(self, head: bytes, length: int) -> RequestHead | ResponseHead | ProtocolError:
        lines = head.split(b"\n")
        lines.pop()  # empty: the head ends with the LF of its last line
        offset = self._skipped
        start = lines[0].removesuffix(b"\r")
        match = self._start_pattern().fullmatch(start)
        if match is None:  # pragma: no cover - checked early by _check_start
            return self._fail(self._start_error, offset, f"malformed start line {_show(start)}")
        offset += len(lines[0]) + 1
        headers: list[tuple[str, str]] = []
        for raw in lines[1:]:
            line = raw.removesuffix(b"\r")
            if line[:1] in (b" ", b"\t"):
                return self._fail(
                    "bad-header-line", offset, "obsolete line folding (RFC 9112 §5.2)"
                )
            field = _FIELD_LINE.fullmatch(line)
            if field is None:
                return self._fail("bad-header-line", offset, f"malformed field line {_show(line)}")
            name, value = field.groups()
            headers.append((name.decode("ascii").lower(), value.decode("latin-1")))
            offset += len(raw) + 1
        return self._make_head(match, headers, length)


class RequestHeadDecoder(HeadDecoder):
    """Decode a request head: what the client sends to open the handshake (RFC 6455 §4.1).

    Errors: ``garbage-before-request-line`` (the stream does not start with a method token),
    ``bad-request-line``, ``bad-header-line`` (including obsolete line folding),
    ``head-too-large`` (more than ``max_head_bytes`` before the blank line) and, from
    :meth:`eof`, ``truncated``.
    """

    __slots__ = ()
    _start_error = "bad-request-line"

    def _check_first_bytes(self, buf: bytearray) -> ProtocolError | None:
        if buf[0] not in _TCHARS:
            return self._fail(
                "garbage-before-request-line",
                self._skipped,
                f"byte 0x{buf[0]:02x} where a method token should start",
            )
        return None

    def _start_pattern(self) -> re.Pattern[bytes]:
        return _REQUEST_LINE

    def _make_head(
        self, match: re.Match[bytes], headers: list[tuple[str, str]], length: int
    ) -> RequestHead:
        method, target, major, minor = match.groups()
        return RequestHead(
            method.decode("ascii"),
            target.decode("latin-1"),
            f"{major.decode()}.{minor.decode()}",
            headers,
            length,
        )


class ResponseHeadDecoder(HeadDecoder):
    """Decode a response head: the server's answer to the handshake (RFC 6455 §4.2.2).

    ``101 Switching Protocols`` accepts the upgrade; anything else refuses it, and its body (if
    any) starts in :attr:`trailing`.  Errors: ``bad-status-line``, ``bad-header-line``,
    ``head-too-large`` and, from :meth:`eof`, ``truncated``.
    """

    __slots__ = ()
    _start_error = "bad-status-line"

    def _check_first_bytes(self, buf: bytearray) -> ProtocolError | None:
        for index, byte in enumerate(buf[:5]):
            if byte != _HTTP_SLASH[index]:
                return self._fail(
                    "bad-status-line",
                    self._skipped,
                    f"byte 0x{byte:02x} at {index} where 'HTTP/' should start the status line",
                )
        return None

    def _start_pattern(self) -> re.Pattern[bytes]:
        return _STATUS_LINE

    def _make_head(
        self, match: re.Match[bytes], headers: list[tuple[str, str]], length: int
    ) -> ResponseHead:
        major, minor, status, reason = match.groups()
        return ResponseHead(
            f"{major.decode()}.{minor.decode()}",
            int(status),
            (reason or b"").decode("latin-1"),
            headers,
            length,
        )


def _show(raw: bytes, limit: int = 60) -> str:
    """A short, printable rendering of untrusted bytes for an error detail."""
    text = repr(raw[:limit])
    return text + "..." if len(raw) > limit else text
