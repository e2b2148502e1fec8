"""The key/accept computation of the WebSocket opening handshake (RFC 6455 §4.1, §4.2.2).

The client proves it speaks WebSocket, and the server proves it read the request, with one
exchange of headers:

1. The client sends ``Sec-WebSocket-Key``: 16 random bytes, base64-encoded (24 characters,
   §4.1 item 7), e.g. ``dGhlIHNhbXBsZSBub25jZQ==`` (the base64 of "the sample nonce").
2. The server appends the fixed GUID ``258EAFA5-E914-47DA-95CA-C5AB0DC85B11`` to the key as
   sent, takes the SHA-1 of that string and base64-encodes the 20-byte digest (§4.2.2 item 5.4).
   It returns the result in ``Sec-WebSocket-Accept`` of the ``101 Switching Protocols``.
3. The client recomputes the value and fails the connection if it differs (§4.1, item 4 of the
   response checks).

The §1.3 example: key ``dGhlIHNhbXBsZSBub25jZQ==`` gives accept
``s3pPLMBiTxaQ9kYGzzhZRbK+xOo=``.  None of these functions raise on bad input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

__all__ = ["GUID", "accept_key", "check_accept", "validate_client_key"]

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
"""The globally unique identifier of RFC 6455 §1.3, appended to every key."""

_OWS = " \t"


def _key_bytes(key: str) -> bytes:
    """The key's octets: header values are decoded as Latin-1, so encode them back that way."""
    try:
        return key.encode("latin-1")
    except UnicodeEncodeError:
        return key.encode("utf-8", errors="surrogatepass")


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value for ``key``: base64(SHA-1(key + GUID)) (§4.2.2).

    Surrounding whitespace (optional whitespace around a header value, RFC 9110 §5.5) is not
    part of the key.  Any string gives an answer; whether the key itself is well formed is
    :func:`validate_client_key`'s question.
    """
    digest = hashlib.sha1(_key_bytes(key.strip(_OWS)) + GUID.encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def check_accept(key: str | None, accept: str | None) -> bool:
    """Whether the server's ``accept`` is the one computed from the client's ``key`` (§4.1).

    ``False`` if either header is missing.  The comparison is exact (base64 is case-sensitive).
    """
    if key is None or accept is None:
        return False
    return accept.strip(_OWS) == accept_key(key)


def validate_client_key(key: str | None) -> bool:
    """Whether ``key`` is a valid ``Sec-WebSocket-Key``: base64 of exactly 16 bytes (§4.1 item 7).

    Strict base64 (RFC 4648 alphabet, correct padding), so the only valid form is 22 characters
    followed by ``==``.  A server MUST answer an invalid key with 400 Bad Request (§4.2.1).
    """
    if key is None:
        return False
    try:
        raw = base64.b64decode(key.strip(_OWS).encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error, ValueError):
        return False
    return len(raw) == 16
