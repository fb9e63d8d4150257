"""Delivered alert ids, per destination, in SQLite: a restarted notifier never sends twice.

Rows are written in one transaction per delivered message (a digest marks all its alerts at
once), *before* the consumer offsets move, so whatever the offsets say was delivered is here.
Old rows are pruned after ``keep_days`` (the alerts topic is not expected to be replayed further).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from candlewax.errors import ConfigError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    alert_id TEXT NOT NULL,
    destination TEXT NOT NULL,
    outcome TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (alert_id, destination)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_at ON delivered (at_ms);
"""


class DeliveredStore:
    """``delivered``/``dead_lettered`` outcomes by (alert id, destination key)."""

    def __init__(self, path: Path | str, keep_days: float = 30.0) -> None:
        self.path = Path(path)
        try:
            if str(path) != ":memory:":
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(
                f"the notifier's state file {path} cannot be opened ({exc}): choose another "
                "with --state-file or --data-dir"
            ) from None
        self._lock = threading.Lock()
        self.keep_ms = int(keep_days * 86_400_000)
        self.prune()

    def seen(self, alert_id: str, destination: str) -> bool:
        return self.outcome(alert_id, destination) is not None

    def outcome(self, alert_id: str, destination: str) -> str | None:
        """The recorded outcome (``delivered``, ``dead_lettered``), or None: not finished yet."""
        with self._lock:
            row = self._db.execute(
                "SELECT outcome FROM delivered WHERE alert_id = ? AND destination = ?",
                (alert_id, destination),
            ).fetchone()
        return None if row is None else str(row[0])

    def mark(self, alert_ids: Iterable[str], destination: str, outcome: str) -> None:
        now = int(time.time() * 1000)
        rows = [(a, destination, outcome, now) for a in alert_ids]
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def count(self, destination: str | None = None) -> int:
        with self._lock:
            if destination is None:
                return int(self._db.execute("SELECT count(*) FROM delivered").fetchone()[0])
            return int(
                self._db.execute(
                    "SELECT count(*) FROM delivered WHERE destination = ?", (destination,)
                ).fetchone()[0]
            )

    def prune(self) -> int:
        cutoff = int(time.time() * 1000) - self.keep_ms
        with self._lock:
            return self._db.execute("DELETE FROM delivered WHERE at_ms < ?", (cutoff,)).rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
