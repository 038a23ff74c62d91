"""The daemon's SQLite state database: one file under the root, WAL mode, atomic transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_db(root: Path) -> sqlite3.Connection:
    """Open (creating if needed) `root/state.db`. Every write goes through a transaction."""
    root.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(root / "state.db", isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn
