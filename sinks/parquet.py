"""Parquet output: closed bars and the raw trade archive, in a hive layout any engine can read.

```
DATA_DIR/bars/interval=1m/date=2024-08-08/part-000-1723161240000.parquet
DATA_DIR/trades/venue=binance/date=2024-08-08/part-000-000000000000-000000099999.parquet
```

Every file name is deterministic — bars by (trades partition, window start), trades by (partition,
offset block) — and every write goes temp file → fsync → ``os.replace`` → fsync of the directory,
so a crash never leaves a partial file visible and re-running the same input rewrites the same
files with the same rows instead of adding duplicates.

**Paths are safe by construction.** The only value from the data in a path is the venue, which
the codec restricts to ``[a-z0-9._-]`` (1-32, starting with a letter or digit), so
``venue=<v>`` names one directory per venue and nothing else. The sink checks again anyway
(:func:`safe_path`): every component built from data must be a single, plain file name, and the
resolved path must lie under ``DATA_DIR`` — a path that fails is never written
(:class:`UnsafePath`).

Decimal columns are exact: prices, volumes and VWAP are DECIMAL(38,8), quote amounts
DECIMAL(38,16) (Σ price·qty keeps all its digits).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from candlewax import metrics
from candlewax.codec import BAR_FIELDS, DECIMALS
from candlewax.codec.records import BAR_PRICES, BAR_QUOTES, BAR_VOLUMES, QUOTE_DECIMALS
from candlewax.errors import CandlewaxError
from candlewax.storage import DataPath, ObjectPath

log = logging.getLogger(__name__)

PRICE = pl.Decimal(38, DECIMALS)
QUOTE = pl.Decimal(38, QUOTE_DECIMALS)
DAY_MS = 86_400_000
#: Rows per Parquet row group. Polars encodes a file one row group at a time, so this bounds
#: the memory a write takes on top of the frame: a 100 000-trade archive block in one group
#: took ~14 MB more while writing, in 16 384-row groups ~7 MB (readers see no difference).
ROW_GROUP = 16_384
#: Up to this many (venue, day) pairs in one archive block, each is filtered out in turn.
FILTER_GROUPS = 4


def _bar_type(name: str) -> pl.DataType:
    if name in BAR_PRICES or name in BAR_VOLUMES:
        return PRICE
    if name in BAR_QUOTES:
        return QUOTE
    if name == "complete":
        return pl.Boolean()
    return pl.Int64() if name in ("start_ms", "end_ms", "trades", "gaps") else pl.String()


#: The codec's bar fields (without ``v``) with exact DECIMAL columns.
BAR_PARQUET_SCHEMA: dict[str, pl.DataType] = {
    name: _bar_type(name) for name in BAR_FIELDS if name != "v"
}
_DECIMAL_COLUMNS = [k for k, v in BAR_PARQUET_SCHEMA.items() if isinstance(v, pl.Decimal)]


class UnsafePath(CandlewaxError):
    """A path built from data would not be a plain file under DATA_DIR."""


def _component(value: str) -> str:
    """One path component from data: a plain name, never a separator, ``.``/``..`` or NUL."""
    if (
        not value
        or value in (".", "..")
        or any(c in value for c in ("/", "\\", "\x00"))
        or len(value.encode()) > 200
    ):
        raise UnsafePath(f"{value[:60]!r} cannot be a file name")
    return value


def safe_path(root: DataPath, *parts: str) -> Any:
    """``root/part/...`` when every part is a plain name and the result resolves under root
    (an object store has no links: plain names are enough there)."""
    names = [_component(p) for p in parts]
    if isinstance(root, ObjectPath):
        return root.joinpath(*names)
    path = root.joinpath(*names)
    real_root = root.resolve()
    if not path.resolve().is_relative_to(real_root):
        raise UnsafePath(f"{path} resolves outside {real_root}")
    return path


def check_writable(data_dir: DataPath) -> None:
    """Fail at start, before anything is consumed, if Parquet cannot be written under data_dir
    (on an object store: a probe object is written and deleted — credentials, bucket, policy)."""
    probe = data_dir / f".candlewax-write-test.{os.getpid()}"
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise CandlewaxError(
            f"data dir {data_dir} is not writable ({exc.strerror or exc}): choose another with "
            "--data-dir or CANDLEWAX_DATA_DIR, or fix its permissions"
        ) from None


def utc_date(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(frame: pl.DataFrame, path: Path | ObjectPath) -> None:
    """Write ``frame`` to ``path`` so that readers see either the old file or the whole new one:
    locally temp file → fsync → rename → fsync of the directory; on an object store one upload
    of the whole file (an object is visible only once its upload completes)."""
    if isinstance(path, ObjectPath):
        buffer = io.BytesIO()
        frame.write_parquet(buffer, compression="zstd", statistics=True, row_group_size=ROW_GROUP)
        path.write_bytes(buffer.getvalue())
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True, row_group_size=ROW_GROUP)
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def count_files(root: DataPath) -> int:
    """How many Parquet files are under ``root`` (0 when it does not exist)."""
    return sum(1 for _ in root.rglob("*.parquet")) if root.is_dir() else 0


def remove_stale_temp(data_dir: DataPath) -> int:
    """Delete temp files that writers killed mid-write left behind (their process is gone).

    They were never visible as data: hidden (leading dot) and not ``*.parquet``. An object
    store has none: an upload that did not complete leaves no object."""
    if isinstance(data_dir, ObjectPath):
        return 0
    removed = 0
    for tmp in data_dir.rglob(".*.tmp") if data_dir.is_dir() else ():
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
            os.kill(pid, 0)
            continue  # its writer is alive
        except (ValueError, IndexError, ProcessLookupError):
            pass
        except PermissionError:
            continue  # alive, someone else's
        tmp.unlink(missing_ok=True)
        removed += 1
    return removed


def bars_frame(bars: pl.DataFrame | Sequence[dict[str, object]]) -> pl.DataFrame:
    """Wire-format bars (decimal strings) → a typed frame with exact DECIMAL columns."""
    if not isinstance(bars, pl.DataFrame):
        strings = {
            k: (pl.String() if k in _DECIMAL_COLUMNS else v) for k, v in BAR_PARQUET_SCHEMA.items()
        }
        bars = pl.DataFrame(bars, schema=strings)
    return bars.select(
        [
            pl.col(name).cast(dtype, strict=True) if name in _DECIMAL_COLUMNS else pl.col(name)
            for name, dtype in BAR_PARQUET_SCHEMA.items()
        ]
    )


def bar_path(
    data_dir: DataPath, interval: str, partition: int, start_ms: int, seq: int | None = None
) -> Any:
    """Time bars: one file per (partition, window start). Bars by activity (``seq``, the first
    bar's number: several files may share a start): one per (partition, kind, step)."""
    name = f"part-{partition:03d}-{start_ms}" + ("" if seq is None else f"-{seq:012d}")
    return safe_path(
        data_dir, "bars", f"interval={interval}", f"date={utc_date(start_ms)}", f"{name}.parquet"
    )


def write_bar_window(
    data_dir: DataPath,
    interval: str,
    partition: int,
    start_ms: int,
    bars: pl.DataFrame | Sequence[dict[str, object]],
    seq: int | None = None,
) -> Any:
    """All bars of one window of one trades partition → one file, rows sorted by venue, symbol
    (and by time: bars by activity)."""
    path = bar_path(data_dir, interval, partition, start_ms, seq)
    frame = bars_frame(bars).sort("venue", "symbol", "start_ms", maintain_order=True)
    write_atomic(frame, path)
    metrics.PARQUET_FILES.labels("bars").inc()
    metrics.PARQUET_ROWS.labels("bars").inc(frame.height)
    return path


# --------------------------------------------------------------------------- trade archive

TRADE_PARQUET_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "id": pl.String(),
    "price": PRICE,
    "qty": PRICE,
    "side": pl.String(),
    "ts_ms": pl.Int64(),
    "recv_ms": pl.Int64(),
    "partition": pl.Int32(),
    "offset": pl.Int64(),
}


def archive_frame(rows: pl.DataFrame, partition: int) -> pl.DataFrame:
    """Kernel rows (scaled integers, see flows/barmath.py ROW_SCHEMA) → archive columns."""
    return rows.select(
        "venue",
        "symbol",
        "id",
        price=pl.col("p").cast(pl.Decimal(38, 0)).cast(PRICE) / 10**8,
        qty=pl.col("q").cast(pl.Decimal(38, 0)).cast(PRICE) / 10**8,
        side=pl.when(pl.col("buy").is_null())
        .then(None)
        .when("buy")
        .then(pl.lit("buy"))
        .otherwise(pl.lit("sell")),
        ts_ms="ts_ms",
        recv_ms="recv_ms",
        partition=pl.lit(partition, dtype=pl.Int32),
        offset="off",
    ).cast(TRADE_PARQUET_SCHEMA)  # type: ignore[arg-type]


def write_trade_block(
    data_dir: DataPath, partition: int, block_start: int, last_offset: int, rows: pl.DataFrame
) -> list[Any]:
    """Archive the trades of one offset block of one partition, one file per (venue, date).

    A block that ends early (end of input) is named by its last offset; when the full block is
    written later, those partial files are removed, so the archive never holds a trade twice.
    """
    root = data_dir / "trades"
    name = f"part-{partition:03d}-{block_start:012d}-{last_offset:012d}.parquet"
    frame = archive_frame(rows, partition)
    written: list[Any] = []
    # One (venue, date) is the common block, found from min/max (a unique() of the keys would
    # take ~9 MB more): no regrouping copy. Otherwise the rows are split by (venue, UTC day
    # number), not by a date string per row. Rows stay in log order (the trades of one array
    # message share an offset and keep it).
    days = frame.select(lo=pl.col("ts_ms").min() // DAY_MS, hi=pl.col("ts_ms").max() // DAY_MS)
    groups: Iterable[tuple[tuple[Any, ...], pl.DataFrame]]
    if frame["venue"].n_unique() == 1 and days["lo"][0] == days["hi"][0]:
        groups = [((frame["venue"][0], days["lo"][0]), frame)]
    else:
        day = pl.col("ts_ms") // DAY_MS
        keys = frame.select("venue", day=day).unique(maintain_order=True).rows()
        if len(keys) <= FILTER_GROUPS:  # one filtered copy at a time (a group_by holds all)
            groups = ((key, frame.filter(pl.col("venue") == key[0], day == key[1])) for key in keys)
        else:  # many venues in one block: one pass, not one per key
            groups = (
                (key, part.drop("_day"))
                for key, part in frame.with_columns(_day=day).group_by(
                    ["venue", "_day"], maintain_order=True
                )
            )
    for (venue, day_number), part in groups:
        date = utc_date(int(day_number) * DAY_MS)
        path = safe_path(data_dir, "trades", f"venue={venue}", f"date={date}", name)
        if not part["offset"].is_sorted():
            part = part.sort("offset", maintain_order=True)
        write_atomic(part, path)
        written.append(path)
        metrics.PARQUET_ROWS.labels("trades").inc(part.height)
    metrics.PARQUET_FILES.labels("trades").inc(len(written))
    keep = set(written)
    for stale in _block_files(root, partition, block_start):
        if stale not in keep:
            stale.unlink(missing_ok=True)
    return written


def _block_files(root: DataPath, partition: int, block_start: int) -> Iterable[Any]:
    return root.glob(f"venue=*/date=*/part-{partition:03d}-{block_start:012d}-*.parquet")
