"""Backtest helpers: time parsing and the progress line."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from candlewax.errors import ConfigError
from flows.backtest import Progress, parse_time


def test_parse_time() -> None:
    want = int(datetime(2024, 8, 8, 23, 55, tzinfo=UTC).timestamp() * 1000)
    assert parse_time("2024-08-08T23:55:00Z") == want
    assert parse_time("2024-08-08 23:55") == want  # UTC when no offset is given
    assert parse_time("2024-08-09T07:55:00+08:00") == want
    assert parse_time(str(want)) == want
    with pytest.raises(ConfigError, match="ISO 8601"):
        parse_time("yesterday")


def test_progress_line_counts_offsets_and_estimates() -> None:
    p = Progress({0: 100, 1: 0}, {0: 300, 1: 200})
    assert p.fraction() == 0.0 and "ETA     ? s" in p.line()
    p.update(0, 200)
    p.update(1, 100)
    assert p.fraction() == pytest.approx(0.5)
    assert " 50.0%" in p.line() and "#" * 15 in p.line()
    p.update(1, 10_000)  # past a lagging end hint: capped
    assert p.fraction() == pytest.approx(0.75)
    assert Progress({}, {}).fraction() == 1.0
