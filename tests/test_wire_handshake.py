"""Sec-WebSocket-Key / Sec-WebSocket-Accept (RFC 6455 §1.3, §4.1, §4.2.2)."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from websockets.utils import accept_key as websockets_accept_key

from tracer.wire.handshake import GUID, accept_key, check_accept, validate_client_key

pytestmark = pytest.mark.fast  # pure: no server, no subprocess

RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_guid() -> None:
    assert GUID == "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def test_rfc_section_1_3_example() -> None:
    assert base64.b64decode(RFC_KEY) == b"the sample nonce"
    assert accept_key(RFC_KEY) == RFC_ACCEPT


def test_surrounding_whitespace_is_not_part_of_the_key() -> None:
    assert accept_key(f" {RFC_KEY}\t") == RFC_ACCEPT


def test_check_accept() -> None:
    assert check_accept(RFC_KEY, RFC_ACCEPT)
    assert check_accept(RFC_KEY, f" {RFC_ACCEPT} ")
    assert not check_accept(RFC_KEY, RFC_ACCEPT.lower())
    assert not check_accept(RFC_KEY, RFC_ACCEPT[:-1])
    assert not check_accept(RFC_KEY, "")
    assert not check_accept("AAAAAAAAAAAAAAAAAAAAAA==", RFC_ACCEPT)
    assert not check_accept(None, RFC_ACCEPT)
    assert not check_accept(RFC_KEY, None)
    assert not check_accept(None, None)


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        (RFC_KEY, True),
        (base64.b64encode(bytes(16)).decode(), True),
        (base64.b64encode(b"\xff" * 16).decode(), True),
        (f" {RFC_KEY} ", True),
        (None, False),
        ("", False),
        (base64.b64encode(bytes(15)).decode(), False),
        (base64.b64encode(bytes(17)).decode(), False),
        (base64.b64encode(bytes(32)).decode(), False),
        (RFC_KEY.rstrip("="), False),  # padding is required
        (RFC_KEY[:-3] + "*==", False),  # not in the base64 alphabet
        ("dGhlIHNhbXBs ZSBub25jZQ==", False),  # whitespace inside
        ("dGhlIHNhbXBsZSBub25jZQ==\n", False),
        ("dGhlIHNhbXBsZSBub25jZé==", False),  # non-ASCII
        ("dGhlIHNhbXBsZSBub25jZ\ud800==", False),  # a lone surrogate
    ],
)
def test_validate_client_key(key: str | None, valid: bool) -> None:
    assert validate_client_key(key) is valid


def test_accept_key_never_raises_on_odd_strings() -> None:
    for key in ("", "é", "\ud800", "\x00" * 100, "☃"):
        assert len(accept_key(key)) == 28


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=16, max_size=16))
def test_random_keys_match_websockets(raw: bytes) -> None:
    key = base64.b64encode(raw).decode()
    assert validate_client_key(key)
    assert accept_key(key) == websockets_accept_key(key)
    assert check_accept(key, websockets_accept_key(key))


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=40), st.none()), st.one_of(st.text(max_size=40), st.none()))
def test_never_raises(key: str | None, accept: str | None) -> None:
    assert isinstance(validate_client_key(key), bool)
    assert isinstance(check_accept(key, accept), bool)
    if key is not None:
        assert isinstance(accept_key(key), str)
