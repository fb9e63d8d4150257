"""Closed bars from the Parquet files the flow writes (``DATA_DIR/bars/interval=I/date=D/
part-PPP-START.parquet``: one file per trades partition and window), for ``/api/v3/klines`` and
for the 24 h of 1m bars the tickers start from.

The file names say which window each holds, so a request reads only the files of its range.
A symbol lives in one trades partition (its key decides), so once a file of that partition has
shown the symbol, the other partitions' files are skipped.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

import polars as pl

from candlewax.codec.rules import MAX_TS_MS, MIN_TS_MS
from candlewax.storage import DataPath, scan_parquet
from sinks.parquet import DAY_MS, utc_date

_FILE = re.compile(r"part-(\d{3})-(\d{1,16})\.parquet")


def _day_files(root: DataPath, interval: str, day_ms: int) -> list[tuple[int, int, Any]]:
    folder = root / "bars" / f"interval={interval}" / f"date={utc_date(day_ms)}"
    if not folder.is_dir():
        return []
    out = []
    for path in folder.glob("*.parquet"):
        m = _FILE.fullmatch(path.name)
        if m:
            out.append((int(m[2]), int(m[1]), path))
    return out


def _dates(root: DataPath, interval: str) -> list[int]:
    """The days that have a folder of ``interval`` bars, newest first."""
    folder = root / "bars" / f"interval={interval}"
    if not folder.is_dir():
        return []
    if isinstance(folder, Path):
        names = {p.name for p in folder.iterdir() if p.is_dir()}
    else:
        names = {p.parent.name for p in folder.glob("*/*.parquet")}
    days = []
    for name in names:
        try:
            day = dt.datetime.strptime(name, "date=%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            continue
        days.append(int(day.timestamp() * 1000))
    return sorted(days, reverse=True)


def read_bars(
    root: DataPath,
    interval: str,
    venue: str,
    symbol: str,
    start_ms: int | None,
    end_ms: int,
    limit: int,
) -> list[dict[str, Any]]:
    """At most ``limit`` bars of the symbol whose windows start in [start_ms, end_ms], oldest
    first: the first ``limit`` from ``start_ms`` when it is given, else the newest ``limit``
    (as Binance's klines). Rows are the flow's bar fields, decimals as exact strings."""
    # No bar lies outside the codec's time range: the days stay real dates.
    end_ms = min(end_ms, MAX_TS_MS - 1)
    lowest = MIN_TS_MS if start_ms is None else max(start_ms, MIN_TS_MS)
    if lowest > end_ms:
        return []
    days = [d for d in _dates(root, interval) if lowest - DAY_MS < d <= end_ms]
    if start_ms is not None:
        days.reverse()  # from the start forward
    rows: list[dict[str, Any]] = []
    partition: int | None = None
    for day in days:
        files = [f for f in _day_files(root, interval, day) if lowest <= f[0] <= end_ms]
        files.sort(key=lambda f: f[0], reverse=start_ms is None)
        if partition is not None:
            files = [f for f in files if f[1] == partition]
        while files and len(rows) < limit:
            need = limit - len(rows)
            # Until the partition is known, every partition's files of the next windows.
            size = need if partition is not None else 4 * need
            chunk, files = files[:size], files[size:]
            frame = _read(chunk, venue, symbol)
            if frame.height and partition is None:
                partition = int(frame["_partition"][0])
                files = [f for f in files if f[1] == partition]
            got = frame.drop("_partition").sort("start_ms", descending=start_ms is None)
            rows.extend(got.head(need).to_dicts())
        if len(rows) >= limit:
            break
    rows.sort(key=lambda r: r["start_ms"])
    return rows


def _read(files: list[tuple[int, int, Any]], venue: str, symbol: str) -> pl.DataFrame:
    if not files:
        return pl.DataFrame()
    frames = []
    for _start, partition, path in files:
        frames.append(
            scan_parquet([path])
            .filter((pl.col("venue") == venue) & (pl.col("symbol") == symbol))
            .with_columns(_partition=pl.lit(partition))
        )
    frame = pl.concat(frames, how="diagonal_relaxed").collect()
    return wire_text(frame) if frame.height else frame


def wire_text(frame: pl.DataFrame) -> pl.DataFrame:
    """Bars read from Parquet with their DECIMAL columns as the wire's exact strings."""
    decimals = [n for n, t in frame.schema.items() if isinstance(t, pl.Decimal)]
    return frame.with_columns([_text(pl.col(n)) for n in decimals])


def _text(col: pl.Expr) -> pl.Expr:
    """A Parquet DECIMAL column back to the wire's text: at least 8 decimals, no other trailing
    zero (as the flow's ``bars`` messages)."""
    text = col.cast(pl.String)
    return text.str.replace(r"^(-?[0-9]+\.[0-9]{8}[0-9]*?)0*$", "${1}").alias(
        col.meta.output_name()
    )
