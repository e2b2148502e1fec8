"""Money as exact decimals with at most two places, stored as integer cents.

Floats never take part in the arithmetic; they only appear when an amount is written out as
a JSON number, and amounts are bounded so that every cent value is exact as a float.
"""

from __future__ import annotations

from decimal import Decimal

CENT = Decimal("0.01")
MAX_AMOUNT = Decimal(1_000_000_000)


def money_problem(value: Decimal) -> str | None:
    """Why ``value`` is not an acceptable amount, or None if it is."""
    if not value.is_finite():
        return "must be a finite number"
    if value <= 0:
        return "must be greater than 0"
    if value > MAX_AMOUNT:
        return f"must be at most {MAX_AMOUNT}"
    if value != value.quantize(CENT):
        return "must have at most 2 decimal places"
    return None


def to_cents(value: Decimal) -> int:
    """Exact conversion of an amount already checked by :func:`money_problem`."""
    return int((value * 100).to_integral_exact())


def to_number(cents: int) -> int | float:
    """The JSON number for an amount: an int when whole, else the shortest exact float."""
    whole, rest = divmod(cents, 100)
    return whole if rest == 0 else float(Decimal(cents) / 100)


def format_cents(cents: int) -> str:
    """Amount for messages to people, always with two decimals (``12.50``)."""
    return f"{Decimal(cents) / 100:.2f}"
