"""Fixtures shared by the whole test suite; generic on purpose, so any test module can use them."""

from __future__ import annotations

import concurrent.futures.thread  # noqa: F401  (before any TracerProvider: see below)
from pathlib import Path

import pytest

# A TracerProvider hooks fork() to refresh its resource, through a thread pool.  Made with a
# resource of its own before concurrent.futures.thread is imported, its hook runs in the forked
# process before the pool's module releases the lock that module takes around fork(): the
# forked process hangs (a program started with a preexec_fn never starts).  Imported first,
# the module's own hook runs first.


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Path of a SQLite database file in the test's own directory; the file does not exist yet."""
    return tmp_path / "auction.db"
