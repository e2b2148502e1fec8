"""The page at ``/``: ``static/index.html`` with the auction list rendered in, html-escaped.

The list is rendered on the server so that the page shows the auctions before any script
runs; the page's script re-renders the same markup from ``GET /auctions`` with DOM text nodes.
"""

from __future__ import annotations

import html
from functools import cache
from pathlib import Path

from demo_app.money import format_cents
from demo_app.store import Auction

PLACEHOLDER = "<!-- auctions -->"


TEMPLATE = Path(__file__).with_name("static") / "index.html"


@cache
def template() -> str:
    # A file path rather than importlib.resources: the latter fails on a package that an
    # editable install first saw as a namespace package.
    return TEMPLATE.read_text(encoding="utf-8")


def render_index(auctions: list[Auction], now: float) -> str:
    rows = "\n".join(_row(auction, now) for auction in auctions)
    return template().replace(PLACEHOLDER, rows, 1)


def _row(auction: Auction, now: float) -> str:
    if auction.high_cents is None:
        price = f"starts at {format_cents(auction.starting_cents)}"
    else:
        price = f"high bid {format_cents(auction.high_cents)}"
    status = "open" if auction.is_open(now) else "closed"
    return (
        f'<li class="auction" data-id="{auction.id}">'
        f'<span class="item">{html.escape(auction.item)}</span> '
        f'<span class="meta">{price} · {status}</span> '
        f'<button type="button" class="join" data-id="{auction.id}">Set For Auction</button>'
        "</li>"
    )
