"""Backtest helpers: time parsing, the progress line, the archive reader."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from candlewax.codec import Trade
from candlewax.codec.columns import decode_batch
from candlewax.errors import ConfigError
from flows.backtest import ArchiveSource, Progress, parse_time
from sinks.parquet import TRADE_PARQUET_SCHEMA, archive_frame, write_trade_block

T0 = 1_722_470_400_000  # 2024-08-01T00:00:00Z


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


def test_the_archive_is_read_column_wise_and_a_damaged_file_like_a_topic(tmp_path: Path) -> None:
    """A backtest from the archive gives the flow kernel rows straight from the Parquet columns
    (no JSON); a slice with a row the fast path would not take is re-encoded as wire trades, so
    the flow rejects that row with its reason, as when reading the topic."""
    trades = [
        Trade("binance", "BTCUSDT", str(i), f"{100 + i}.5", "0.25", "buy" if i % 2 else None,
              T0 + 1_000 * i, T0 + 1_000 * i + 3)
        for i in range(30)
    ]  # fmt: skip
    values = [t.encode() for t in trades]
    rows = decode_batch(values, list(range(len(values)))).rows  # type: ignore[arg-type]
    write_trade_block(tmp_path, 0, 0, len(values) - 1, rows)
    source = ArchiveSource(tmp_path / "trades", (T0, T0 + 3_600_000), batch_max=8)
    batches = list(source._batches(0))
    assert [b.rows is not None for b in batches] == [True] * 4 and batches[-1].final
    assert all(not b.values for b in batches)
    got = pl.concat([b.rows for b in batches if b.rows is not None])
    assert got.to_dicts() == rows.to_dicts()  # exactly what decoding the wire trades gives

    # A row no connector writes (an injection attempt in a name) in a file of its own.
    damaged = archive_frame(rows.head(2), 0).with_columns(
        offset=pl.Series([100, 101], dtype=pl.Int64),
        venue=pl.Series(["binance", 'binance","symbol":"ETHUSDT']),
    )
    damaged.write_parquet(tmp_path / "trades" / "damaged.parquet")
    source = ArchiveSource(tmp_path / "trades", (T0, T0 + 3_600_000), batch_max=64)
    (batch,) = list(source._batches(0))
    assert batch.rows is None and len(batch.values) == 32 and batch.offsets[-1] == 101
    decoded = decode_batch(batch.values, batch.offsets)  # type: ignore[arg-type]
    assert [(batch.offsets[i], r.reason) for i, r in decoded.rejected] == [(101, "bad_name")]


@pytest.mark.parametrize("filter_groups", [4, 0], ids=["filtered-in-turn", "grouped"])
def test_an_archive_block_is_one_file_per_venue_and_utc_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, filter_groups: int
) -> None:
    """Trades of one block over two venues and across UTC midnight: one file per (venue, date)
    with that pair's trades in log order; a block of one venue and one date: one file. The dates
    are the trades' own, formatted here by the standard library. Both ways of splitting a block
    (few pairs filtered out in turn, many grouped in one pass) give the same files."""
    monkeypatch.setattr("sinks.parquet.FILTER_GROUPS", filter_groups)
    midnight = T0 + 86_400_000  # 2024-08-02T00:00:00Z
    times = [midnight - 2_000, midnight - 1, midnight, midnight + 5_000, midnight - 1_000]
    trades = [
        Trade("binance" if i % 2 else "okx", "BTCUSDT", str(i), "100.5", "0.25", None, ts, None)
        for i, ts in enumerate(times)
    ]
    rows = decode_batch([t.encode() for t in trades], list(range(len(trades)))).rows
    assert rows is not None
    write_trade_block(tmp_path, 3, 0, 99_999, rows)

    def day(ts: int) -> str:
        return datetime.fromtimestamp(ts / 1000, UTC).date().isoformat()

    want: dict[str, list[str]] = {}
    for t in trades:
        want.setdefault(f"venue={t.venue}/date={day(t.ts_ms)}", []).append(t.id)
    got = {
        str(p.parent.relative_to(tmp_path / "trades")): pl.read_parquet(p)["id"].to_list()
        for p in (tmp_path / "trades").rglob("*.parquet")
    }
    assert got == want and len(got) == 4
    for path in (tmp_path / "trades").rglob("*.parquet"):
        assert pl.read_parquet(path).schema == TRADE_PARQUET_SCHEMA
    assert {p.name for p in (tmp_path / "trades").rglob("*.parquet")} == {
        "part-003-000000000000-000000099999.parquet"
    }

    one = decode_batch([trades[0].encode(), trades[4].encode()], [100_000, 100_001]).rows
    assert one is not None
    write_trade_block(tmp_path, 3, 100_000, 100_001, one)
    files = list((tmp_path / "trades").rglob("part-003-000000100000-*.parquet"))
    assert [str(f.parent.relative_to(tmp_path / "trades")) for f in files] == [
        "venue=okx/date=2024-08-01"
    ]
    assert pl.read_parquet(files[0])["offset"].to_list() == [100_000, 100_001]
    # One venue across midnight: still one file per date.
    two_days = decode_batch([trades[0].encode(), trades[2].encode()], [200_000, 200_001]).rows
    assert two_days is not None
    write_trade_block(tmp_path, 3, 200_000, 200_001, two_days)
    files = sorted((tmp_path / "trades").rglob("part-003-000000200000-*.parquet"))
    assert [str(f.parent.relative_to(tmp_path / "trades")) for f in files] == [
        "venue=okx/date=2024-08-01",
        "venue=okx/date=2024-08-02",
    ]
