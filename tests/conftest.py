"""Fixtures shared by the whole test suite; generic on purpose, so any test module can use them."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a SQLite database file in the test's own directory; the file does not exist yet."""
    return tmp_path / "auction.db"
