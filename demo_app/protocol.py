"""The JSON text messages spoken on ``/ws/auction/{auctionID}``, in both directions.

Client to server::

    {"type": "bid", "bidder": NAME, "amount": N}
    {"type": "chat", "sender": NAME, "text": S}

Server to client::

    {"type": "state", "auction": {...}, "bids": [...], "chat": [...], "now": T}   on join
    {"type": "bid", "bidder": NAME, "amount": N, "at": T}                          to the room
    {"type": "chat", "sender": NAME, "text": S, "at": T}                           to the room
    {"type": "error", "code": WORD, "reason": S}                                   to the sender

Amounts are JSON numbers with at most two decimals; times are Unix seconds. Parsing is strict
(a bool is not a number, a string is not an amount) and bounded, so that anything a client
sends either becomes one well-formed action or one ``error`` reply.
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from demo_app.errors import Rejected
from demo_app.money import money_problem, to_cents, to_number
from demo_app.store import Auction, Bid, ChatLine, Room

MAX_MESSAGE_BYTES = 16 * 1024
MAX_NAME_CHARS = 64
MAX_CHAT_CHARS = 1000
STATE_BIDS = 200  # a joiner sees the latest bids; GET /auctions/{id} has them all
STATE_CHAT = 50


@dataclass(frozen=True)
class BidIn:
    bidder: str
    amount_cents: int


@dataclass(frozen=True)
class ChatIn:
    sender: str
    text: str


# -- client to server ---------------------------------------------------------------------------


def parse_client_message(data: str | None) -> BidIn | ChatIn:
    """Turn one received text message into an action, or raise :class:`Rejected`.

    ``data`` is None for a binary message, which this protocol does not use.
    """
    if data is None:
        raise Rejected("binary_message", "send JSON text messages, not binary ones")
    if len(data.encode("utf-8", "replace")) > MAX_MESSAGE_BYTES:
        raise Rejected("too_large", f"message is larger than {MAX_MESSAGE_BYTES} bytes")
    try:
        message = json.loads(data, parse_float=Decimal, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        raise Rejected("bad_json", "message is not valid JSON") from None
    if not isinstance(message, dict):
        raise Rejected("bad_message", "message must be a JSON object")
    kind = message.get("type")
    if kind == "bid":
        return BidIn(_name(message, "bidder"), _amount(message, "amount"))
    if kind == "chat":
        return ChatIn(_name(message, "sender"), _text(message, "text"))
    raise Rejected("unknown_type", 'type must be "bid" or "chat"')


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _name(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str):
        raise Rejected("bad_field", f"{field} must be a string")
    value = value.strip()
    if not value:
        raise Rejected("bad_field", f"{field} must not be empty")
    if len(value) > MAX_NAME_CHARS:
        raise Rejected("bad_field", f"{field} must be at most {MAX_NAME_CHARS} characters")
    if any(unicodedata.category(char) == "Cc" for char in value):
        raise Rejected("bad_field", f"{field} must not contain control characters")
    return value


def _text(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str):
        raise Rejected("bad_field", f"{field} must be a string")
    if not value.strip():
        raise Rejected("bad_field", f"{field} must not be empty")
    if len(value) > MAX_CHAT_CHARS:
        raise Rejected("bad_field", f"{field} must be at most {MAX_CHAT_CHARS} characters")
    return value


def _amount(message: dict[str, Any], field: str) -> int:
    value = message.get(field)
    # bool is an int subclass in Python, but true is not an amount.
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise Rejected("bad_field", f"{field} must be a number")
    amount = Decimal(value)
    problem = money_problem(amount)
    if problem is not None:
        raise Rejected("bad_field", f"{field} {problem}")
    return to_cents(amount)


# -- server to client ---------------------------------------------------------------------------


def auction_json(auction: Auction, now: float) -> dict[str, Any]:
    """The public view of an auction, shared by REST and the ``state`` message."""
    return {
        "id": auction.id,
        "item": auction.item,
        "starting_price": to_number(auction.starting_cents),
        "min_increment": to_number(auction.increment_cents),
        "duration_s": auction.duration_s,
        "created_at": auction.created_at,
        "ends_at": auction.ends_at,
        "closed": not auction.is_open(now),
        "high_bid": None if auction.high_cents is None else to_number(auction.high_cents),
        "high_bidder": auction.high_bidder,
        "min_next_bid": to_number(auction.min_next_cents),
        "bid_count": auction.bid_count,
    }


def bid_json(bid: Bid) -> dict[str, Any]:
    return {"bidder": bid.bidder, "amount": to_number(bid.amount_cents), "at": bid.at}


def chat_json(line: ChatLine) -> dict[str, Any]:
    return {"sender": line.sender, "text": line.text, "at": line.at}


def state_event(room: Room, now: float) -> dict[str, Any]:
    return {
        "type": "state",
        "auction": auction_json(room.auction, now),
        "bids": [bid_json(bid) for bid in room.bids],
        "chat": [chat_json(line) for line in room.chat],
        "now": now,
    }


def bid_event(bid: Bid) -> dict[str, Any]:
    return {"type": "bid", **bid_json(bid)}


def chat_event(line: ChatLine) -> dict[str, Any]:
    return {"type": "chat", **chat_json(line)}


def error_event(rejected: Rejected) -> dict[str, Any]:
    return {"type": "error", "code": rejected.code, "reason": rejected.reason}


def dumps(message: dict[str, Any]) -> str:
    """Compact JSON, the one serialiser for everything sent on the socket."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False)
