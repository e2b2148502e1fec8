"""SQLite persistence for auctions, bids and chat (stdlib ``sqlite3``).

Why it is shaped this way:

- The file is opened lazily, on first use, so importing the app never creates a database.
- Bid validation and insertion run in one ``BEGIN IMMEDIATE`` transaction, so even several
  processes on one file cannot both accept a bid against the same high bid; a UNIQUE index on
  ``(auction_id, amount_cents)`` backs the strictly-increasing rule up at the schema level.
- Calls are short and made directly from the event loop (acceptable for a demo); a thread lock
  guards the single connection so that a caller on another thread cannot interleave with it.
- WAL mode lets readers run while a bid commits; ``synchronous=NORMAL`` keeps every committed
  bid across an app restart (only an OS crash may lose the last commits).
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

from demo_app.errors import Rejected
from demo_app.money import format_cents

SCHEMA = """
CREATE TABLE IF NOT EXISTS auctions (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    item            TEXT    NOT NULL,
    starting_cents  INTEGER NOT NULL CHECK (starting_cents > 0),
    increment_cents INTEGER NOT NULL CHECK (increment_cents > 0),
    created_at      REAL    NOT NULL,
    duration_s      REAL    NOT NULL CHECK (duration_s > 0)
);
CREATE TABLE IF NOT EXISTS bids (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    auction_id   INTEGER NOT NULL REFERENCES auctions(id),
    bidder       TEXT    NOT NULL,
    amount_cents INTEGER NOT NULL,
    at           REAL    NOT NULL,
    UNIQUE (auction_id, amount_cents)
);
CREATE TABLE IF NOT EXISTS chat (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    auction_id INTEGER NOT NULL REFERENCES auctions(id),
    sender     TEXT    NOT NULL,
    text       TEXT    NOT NULL,
    at         REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS chat_by_auction ON chat (auction_id, id);
"""

AUCTION_SELECT = """
SELECT a.id, a.item, a.starting_cents, a.increment_cents, a.created_at, a.duration_s,
       (SELECT COUNT(*) FROM bids c WHERE c.auction_id = a.id) AS bid_count,
       h.amount_cents AS high_cents, h.bidder AS high_bidder
FROM auctions a
LEFT JOIN bids h ON h.id = (
    SELECT b.id FROM bids b WHERE b.auction_id = a.id ORDER BY b.amount_cents DESC LIMIT 1
)
"""

SEED_ITEM = "Vintage typewriter"
_ID = re.compile(r"[1-9][0-9]{0,17}")  # fits SQLite's 64-bit INTEGER


@dataclass(frozen=True)
class Auction:
    id: int
    item: str
    starting_cents: int
    increment_cents: int
    created_at: float
    duration_s: float
    bid_count: int
    high_cents: int | None
    high_bidder: str | None

    @property
    def ends_at(self) -> float:
        return self.created_at + self.duration_s

    def is_open(self, now: float) -> bool:
        return now < self.ends_at

    @property
    def min_next_cents(self) -> int:
        """The lowest acceptable next bid."""
        if self.high_cents is None:
            return self.starting_cents
        return self.high_cents + self.increment_cents


@dataclass(frozen=True)
class Bid:
    bidder: str
    amount_cents: int
    at: float


@dataclass(frozen=True)
class ChatLine:
    sender: str
    text: str
    at: float


@dataclass(frozen=True)
class Room:
    """What a joining bidder is shown: the auction, its latest bids and chat, oldest first."""

    auction: Auction
    bids: list[Bid]
    chat: list[ChatLine]


def parse_auction_id(auction_id: str | int) -> int | None:
    """The numeric id, or None for anything that cannot name an auction."""
    if isinstance(auction_id, int):
        return auction_id if auction_id > 0 else None
    return int(auction_id) if _ID.fullmatch(auction_id) else None


class AuctionStore:
    """Auctions, bids and chat in one SQLite file."""

    def __init__(self, path: str | os.PathLike[str], *, seed: bool = False) -> None:
        self.path = os.fspath(path)
        self.seed = seed
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()

    # -- connection -------------------------------------------------------------------------

    def open(self) -> None:
        """Create the file, schema and seed auction now rather than on first use."""
        with self._lock:
            self._db()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=5.0
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.executescript(SCHEMA)
            self._conn = conn
            if self.seed:
                self._seed()
        return self._conn

    @contextlib.contextmanager
    def _transaction(self, begin: str = "BEGIN IMMEDIATE") -> Iterator[sqlite3.Connection]:
        """One transaction on the shared connection; plain ``BEGIN`` gives a consistent read."""
        with self._lock:
            conn = self._db()
            conn.execute(begin)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _seed(self) -> None:
        """Give an empty database one auction so that the page has something to show."""
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM auctions LIMIT 1").fetchone() is None:
                self._insert_auction(conn, SEED_ITEM, 2500, 100, 24 * 3600.0, time.time())

    # -- auctions ---------------------------------------------------------------------------

    def create_auction(
        self,
        item: str,
        starting_cents: int,
        increment_cents: int,
        duration_s: float,
        now: float | None = None,
    ) -> Auction:
        with self._transaction() as conn:
            created = time.time() if now is None else now
            auction_id = self._insert_auction(
                conn, item, starting_cents, increment_cents, duration_s, created
            )
            auction = self._auction(conn, auction_id)
        assert auction is not None  # just inserted, same transaction
        return auction

    def list_auctions(self) -> list[Auction]:
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(AUCTION_SELECT + " ORDER BY a.id").fetchall()
        return [_auction_from_row(row) for row in rows]

    def get_auction(self, auction_id: str | int) -> Auction | None:
        key = parse_auction_id(auction_id)
        if key is None:
            return None
        with self._transaction("BEGIN") as conn:
            return self._auction(conn, key)

    def bids(self, auction_id: int) -> list[Bid]:
        """Every bid on the auction, in acceptance order."""
        with self._transaction("BEGIN") as conn:
            return self._bids(conn, auction_id, None)

    def room(self, auction_id: str | int, *, bids: int, chat: int) -> Room | None:
        """The auction with its last ``bids`` bids and ``chat`` chat lines, read consistently."""
        key = parse_auction_id(auction_id)
        if key is None:
            return None
        with self._transaction("BEGIN") as conn:
            auction = self._auction(conn, key)
            if auction is None:
                return None
            return Room(auction, self._bids(conn, key, bids), self._chat(conn, key, chat))

    # -- the two things that happen in a room -------------------------------------------------

    def place_bid(
        self, auction_id: int, bidder: str, amount_cents: int, now: float | None = None
    ) -> Bid:
        """Check the bid against the auction's current state and record it, atomically.

        Raises :class:`Rejected` (``unknown_auction``, ``auction_closed``, ``bid_too_low``).
        """
        with self._transaction() as conn:
            at = time.time() if now is None else now
            auction = self._auction(conn, auction_id)
            if auction is None:
                raise Rejected("unknown_auction", "unknown auction")
            if not auction.is_open(at):
                raise Rejected("auction_closed", "the auction has closed")
            minimum = auction.min_next_cents
            if amount_cents < minimum:
                raise Rejected("bid_too_low", f"bid must be at least {format_cents(minimum)}")
            conn.execute(
                "INSERT INTO bids (auction_id, bidder, amount_cents, at) VALUES (?, ?, ?, ?)",
                (auction_id, bidder, amount_cents, at),
            )
            return Bid(bidder, amount_cents, at)

    def add_chat(
        self, auction_id: int, sender: str, text: str, now: float | None = None
    ) -> ChatLine:
        with self._transaction() as conn:
            at = time.time() if now is None else now
            conn.execute(
                "INSERT INTO chat (auction_id, sender, text, at) VALUES (?, ?, ?, ?)",
                (auction_id, sender, text, at),
            )
            return ChatLine(sender, text, at)

    # -- queries inside a transaction ---------------------------------------------------------

    @staticmethod
    def _insert_auction(
        conn: sqlite3.Connection,
        item: str,
        starting_cents: int,
        increment_cents: int,
        duration_s: float,
        created_at: float,
    ) -> int:
        cursor = conn.execute(
            "INSERT INTO auctions (item, starting_cents, increment_cents, created_at, duration_s)"
            " VALUES (?, ?, ?, ?, ?)",
            (item, starting_cents, increment_cents, created_at, duration_s),
        )
        return int(cursor.lastrowid or 0)

    @staticmethod
    def _auction(conn: sqlite3.Connection, auction_id: int) -> Auction | None:
        row = conn.execute(AUCTION_SELECT + " WHERE a.id = ?", (auction_id,)).fetchone()
        return None if row is None else _auction_from_row(row)

    @staticmethod
    def _bids(conn: sqlite3.Connection, auction_id: int, last: int | None) -> list[Bid]:
        rows = conn.execute(
            "SELECT bidder, amount_cents, at FROM bids WHERE auction_id = ?"
            " ORDER BY id DESC LIMIT ?",
            (auction_id, -1 if last is None else last),
        ).fetchall()
        return [Bid(r["bidder"], r["amount_cents"], r["at"]) for r in reversed(rows)]

    @staticmethod
    def _chat(conn: sqlite3.Connection, auction_id: int, last: int) -> list[ChatLine]:
        rows = conn.execute(
            "SELECT sender, text, at FROM chat WHERE auction_id = ? ORDER BY id DESC LIMIT ?",
            (auction_id, last),
        ).fetchall()
        return [ChatLine(r["sender"], r["text"], r["at"]) for r in reversed(rows)]


def _auction_from_row(row: sqlite3.Row) -> Auction:
    return Auction(
        id=row["id"],
        item=row["item"],
        starting_cents=row["starting_cents"],
        increment_cents=row["increment_cents"],
        created_at=row["created_at"],
        duration_s=row["duration_s"],
        bid_count=row["bid_count"],
        high_cents=row["high_cents"],
        high_bidder=row["high_bidder"],
    )
