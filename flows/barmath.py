"""Pure bar math: decode a batch of ``trades`` messages, aggregate it, merge it into open windows,
close windows behind the watermark. No Bytewax, no Kafka: everything here is testable alone.

Exactness: prices and quantities are fixed-point integers (units of 1e-8, see
``records.to_scaled``) held in Polars Int128 columns, so volume, quote volume (Σ price·qty at 1e-16)
and the taker-buy sums are exact — no float ever touches them.

One function, :func:`merge`, does all aggregation: a trade is a bar of one trade; 1m bars are
merges of trades; 5m…1h bars are merges of closed 1m bars. Merging is associative, so a rollup
equals the bar built directly from the same trades.

Order: the open (close) of a bar is the trade with the smallest (largest) event time, ties broken
by log order — for Binance that is trade-id order, exactly as its klines.

Time: the watermark of a ``trades`` partition is the newest event time seen in it (trades and
heartbeats) minus ``lateness_ms``. A window ``[start, end)`` closes once ``end <= watermark``. A
trade is *late* when its window had closed before it arrived; lateness is decided row by row in
log order, so the same log gives the same bars whatever the batch boundaries or replay speed.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field

import polars as pl

from candlewax.records import (
    DECIMALS,
    INTERVALS,
    MAX_NOTIONAL,
    MAX_TS_MS,
    MIN_TS_MS,
    SCALE,
    SCHEMA_VERSION,
    Heartbeat,
    Rejected,
    decode_message,
    divide_rounded,
    format_scaled,
    to_scaled,
)

#: Columns of a decoded batch, in log order.
ROW_SCHEMA: dict[str, pl.DataType] = {
    "hb": pl.Boolean(),
    "venue": pl.String(),
    "symbol": pl.String(),
    "id": pl.String(),
    "p": pl.Int128(),
    "q": pl.Int128(),
    "buy": pl.Boolean(),
    "ts_ms": pl.Int64(),
    "recv_ms": pl.Int64(),
    "off": pl.Int64(),
}

#: Columns of a (partial or closed) bar in the kernel. Amounts are scaled integers:
#: prices and volumes at 1e-8, quote amounts at 1e-16.
BAR_SCHEMA: dict[str, pl.DataType] = {
    "venue": pl.String(),
    "symbol": pl.String(),
    "start_ms": pl.Int64(),
    "open_ts": pl.Int64(),
    "open": pl.Int128(),
    "open_id": pl.String(),
    "close_ts": pl.Int64(),
    "close": pl.Int128(),
    "close_id": pl.String(),
    "high": pl.Int128(),
    "low": pl.Int128(),
    "volume": pl.Int128(),
    "quote": pl.Int128(),
    "trades": pl.Int64(),
    "buy_volume": pl.Int128(),
    "buy_quote": pl.Int128(),
}
KEYS = ["venue", "symbol", "start_ms"]

_JSON_SCHEMA = {
    "v": pl.Int64,
    "type": pl.String,
    "venue": pl.String,
    "symbol": pl.String,
    "id": pl.String,
    "price": pl.String,
    "qty": pl.String,
    "side": pl.String,
    "ts_ms": pl.Int64,
    "recv_ms": pl.Int64,
}
# Canonical forms the fast path accepts without asking records.decode_trade. Anything else (even
# if valid) sends the whole batch to the exact per-message path.
_CANON_DECIMAL = r"^[1-9][0-9]{0,13}(\.[0-9]{1,8}0*)?$|^0(\.[0-9]{1,8}0*)?$"
_CANON_ID = r"^[A-Za-z0-9_-]+$"
_VENUE_RE = re.compile(r"^[a-z][a-z0-9-]*$")
_SYMBOL_RE = re.compile(r"^[A-Z0-9._:]*[A-Z][A-Z0-9._:]*$")


def empty_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=ROW_SCHEMA)


def empty_bars() -> pl.DataFrame:
    return pl.DataFrame(schema=BAR_SCHEMA)


# --------------------------------------------------------------------------- decoding


@dataclass
class Decoded:
    """A batch of messages decoded: valid rows in log order, and what was rejected.

    ``rejected`` holds (index of the message in the batch, rejection) pairs.
    """

    rows: pl.DataFrame
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)
    fast: bool = True


def _fast_decode(values: list[bytes], offsets: list[int]) -> pl.DataFrame | None:
    """Vectorized decode of a batch of single-object messages, or None if anything is off.

    One Polars query parses, checks every row is canonical and valid, and converts. Any failure
    (a parse error, a row count that is not one per message, a cast that does not fit) means
    "let the exact path decide" — never a rejection of its own.
    """
    if not values:
        return empty_rows()
    try:
        buf = b"\n".join(values)
        if buf[:1] == b"[" or b"\n[" in buf:
            split = _split_arrays(values, offsets)
            if split is None:
                return None
            buf, offsets = split
        df = pl.read_ndjson(io.BytesIO(buf), schema=_JSON_SCHEMA)
        if df.height != len(offsets):  # a message held a newline, several objects, or none
            return None
        # Few distinct venues, symbols and sides: check the distinct values, not every row.
        if not (
            # Polars renders JSON true/false in string columns as text: leave those to records.
            _all_match(df["venue"], _VENUE_RE, exclude=("true", "false"))
            and _all_match(df["symbol"], _SYMBOL_RE)
            and set(df["side"].drop_nulls().unique().to_list()) <= {"buy", "sell"}
        ):
            return None
        rows = df.with_columns(off=pl.Series(offsets, dtype=pl.Int64)).select(_FAST_ROWS)
    except Exception:
        return None
    if not rows["ok"].all():
        return None
    return rows.drop("ok")


def _split_arrays(values: list[bytes], offsets: list[int]) -> tuple[bytes, list[int]] | None:
    """Compact JSON arrays of trades → NDJSON lines, with each line's message offset.

    ``[{..},{..}]`` becomes ``{..}\n{..}``. A ``},{`` inside a string would leave a raw newline
    in that string — invalid JSON, so the parse fails and the exact path decides.
    """
    lines: list[bytes] = []
    line_offsets: list[int] = []
    for value, offset in zip(values, offsets, strict=True):
        if value[:1] != b"[":
            lines.append(value)
            line_offsets.append(offset)
            continue
        if value[-1:] != b"]":
            return None
        inner = value[1:-1]
        if not inner:
            continue  # an empty array holds no trades
        lines.append(inner.replace(b"},{", b"}\n{"))
        line_offsets.extend([offset] * (inner.count(b"},{") + 1))
    return b"\n".join(lines), line_offsets


def _all_match(column: pl.Series, pattern: re.Pattern[str], exclude: tuple[str, ...] = ()) -> bool:
    return all(
        pattern.match(v) and v not in exclude for v in column.drop_nulls().unique().to_list()
    )


def _fast_rows() -> list[pl.Expr]:
    hb = (pl.col("type") == "heartbeat").fill_null(False)
    in_range = pl.col("ts_ms").is_between(MIN_TS_MS, MAX_TS_MS, closed="left")
    venue_ok = pl.col("venue").is_not_null()  # its distinct values are checked in Python
    trade_ok = (
        (pl.col("type").is_null() | (pl.col("type") == "trade"))
        & venue_ok
        & pl.col("symbol").is_not_null()
        & pl.col("id").str.contains(_CANON_ID)
        & ~pl.col("id").is_in(["true", "false"])  # JSON booleans, rendered as text by Polars
        & pl.col("price").str.contains(_CANON_DECIMAL)
        & pl.col("qty").str.contains(_CANON_DECIMAL)
        & in_range
        & (
            pl.col("recv_ms").is_null()
            | pl.col("recv_ms").is_between(MIN_TS_MS, MAX_TS_MS, closed="left")
        )
    )
    ok = (pl.col("v").is_null() | (pl.col("v") == 1)) & ((hb & venue_ok & in_range) | trade_ok)

    def trade_only(name: str) -> pl.Expr:  # heartbeats carry no trade fields, whatever they hold
        return pl.when(hb).then(None).otherwise(pl.col(name))

    # Canonical strings cast exactly; anything the regexes let through that does not fit raises.
    p = trade_only("price").cast(pl.Decimal(38, 8)).to_physical()
    q = trade_only("qty").cast(pl.Decimal(38, 8)).to_physical()
    # Zero after scaling ("0.00000000") is no price, and near records.MAX_NOTIONAL the exact
    # path decides: the fast path only accepts what records.decode_trade accepts.
    limit = MAX_NOTIONAL / 10 * SCALE * SCALE
    sane = hb | ((p > 0) & (q > 0) & (p.cast(pl.Float64) * q.cast(pl.Float64) < limit))
    return [
        (ok & sane).fill_null(False).alias("ok"),
        hb.alias("hb"),
        pl.col("venue"),
        trade_only("symbol").alias("symbol"),
        trade_only("id").alias("id"),
        p.cast(pl.Int128).alias("p"),
        q.cast(pl.Int128).alias("q"),
        (trade_only("side") == "buy").alias("buy"),
        pl.col("ts_ms"),
        trade_only("recv_ms").alias("recv_ms"),
        pl.col("off"),
    ]


_FAST_ROWS = _fast_rows()


def _slow_decode(values: list[bytes], offsets: list[int]) -> Decoded:
    """Message by message through records.decode_message: the authority on validity."""
    cols: dict[str, list] = {name: [] for name in ROW_SCHEMA}
    rejected: list[tuple[int, Rejected]] = []
    for index, (value, offset) in enumerate(zip(values, offsets, strict=True)):
        good, bad = decode_message(value)
        rejected.extend((index, r) for r in bad)
        for rec in good:
            row: tuple[object, ...]
            if isinstance(rec, Heartbeat):
                row = (True, rec.venue, None, None, None, None, None, rec.ts_ms, None, offset)
            else:
                row = (
                    False,
                    rec.venue,
                    rec.symbol,
                    rec.id,
                    to_scaled(rec.price),
                    to_scaled(rec.qty),
                    None if rec.side is None else rec.side == "buy",
                    rec.ts_ms,
                    rec.recv_ms,
                    offset,
                )
            for name, item in zip(ROW_SCHEMA, row, strict=True):
                cols[name].append(item)
    return Decoded(pl.DataFrame(cols, schema=ROW_SCHEMA), rejected, fast=False)


def decode_batch(values: list[bytes], offsets: list[int] | None = None) -> Decoded:
    """Decode Kafka message values (JSON objects or arrays of them) into kernel rows.

    ``offsets`` (default 0..n-1) are the messages' Kafka offsets, kept per row as ``off``.
    """
    if offsets is None:
        offsets = list(range(len(values)))
    rows = _fast_decode(values, offsets)
    if rows is not None:
        return Decoded(rows)
    return _slow_decode(values, offsets)


# --------------------------------------------------------------------------- aggregation


def trades_as_bars(rows: pl.DataFrame, interval_ms: int) -> pl.DataFrame:
    """Each trade row as a bar of one trade (heartbeat rows must be filtered out before)."""
    quote = pl.col("p") * pl.col("q")
    zero = pl.lit(0, dtype=pl.Int128)
    return rows.select(
        "venue",
        "symbol",
        start_ms=pl.col("ts_ms") - pl.col("ts_ms") % interval_ms,
        open_ts="ts_ms",
        open="p",
        open_id="id",
        close_ts="ts_ms",
        close="p",
        close_id="id",
        high="p",
        low="p",
        volume="q",
        quote=quote,
        trades=pl.lit(1, dtype=pl.Int64),
        buy_volume=pl.when("buy").then("q").otherwise(zero),
        buy_quote=pl.when("buy").then(quote).otherwise(zero),
    )


def merge(bars: pl.DataFrame, interval_ms: int | None = None) -> pl.DataFrame:
    """Merge bars that fall in the same (venue, symbol, window). Rows must be in log order, and
    the rows of one key must not overlap in time (single trades, or bars of distinct windows).

    With ``interval_ms``, ``start_ms`` is first floored to that interval (rollups).
    """
    if interval_ms is not None:
        bars = bars.with_columns(start_ms=pl.col("start_ms") - pl.col("start_ms") % interval_ms)
    # A stable sort on time keeps log order among equal times, so within each group the first
    # row opens (smallest time, earliest in log) and the last row closes (largest, latest).
    ordered = bars.sort("open_ts", maintain_order=True)
    return ordered.group_by(KEYS, maintain_order=True).agg(
        open_ts=pl.col("open_ts").first(),
        open=pl.col("open").first(),
        open_id=pl.col("open_id").first(),
        close_ts=pl.col("close_ts").last(),
        close=pl.col("close").last(),
        close_id=pl.col("close_id").last(),
        high=pl.col("high").max(),
        low=pl.col("low").min(),
        volume=pl.col("volume").sum(),
        quote=pl.col("quote").sum(),
        trades=pl.col("trades").sum(),
        buy_volume=pl.col("buy_volume").sum(),
        buy_quote=pl.col("buy_quote").sum(),
    )


_SUMS = ("volume", "quote", "trades", "buy_volume", "buy_quote")


def combine(state: pl.DataFrame, fresh: pl.DataFrame) -> pl.DataFrame:
    """Fold ``fresh`` partial bars (later in the log) into ``state``; one row per key in each.

    Open: the earlier open time wins, the state's on a tie (it came first in the log). Close: the
    later close time wins, the fresh one on a tie (it came last).
    """
    if not state.height:
        return fresh
    if not fresh.height:
        return state
    j = state.join(fresh, on=KEYS, how="full", coalesce=True, suffix="_n")
    old_open = pl.col("open_ts")
    new_open = pl.col("open_ts_n")
    use_new_open = old_open.is_null() | (new_open.is_not_null() & (new_open < old_open))
    use_new_close = pl.col("close_ts").is_null() | (
        pl.col("close_ts_n").is_not_null() & (pl.col("close_ts_n") >= pl.col("close_ts"))
    )

    def pick(name: str, use_new: pl.Expr) -> pl.Expr:
        return pl.when(use_new).then(pl.col(f"{name}_n")).otherwise(pl.col(name)).alias(name)

    return j.select(
        *KEYS,
        pick("open_ts", use_new_open),
        pick("open", use_new_open),
        pick("open_id", use_new_open),
        pick("close_ts", use_new_close),
        pick("close", use_new_close),
        pick("close_id", use_new_close),
        pl.max_horizontal("high", "high_n").alias("high"),
        pl.min_horizontal("low", "low_n").alias("low"),
        *[(pl.col(n).fill_null(0) + pl.col(f"{n}_n").fill_null(0)).alias(n) for n in _SUMS],
    )


@dataclass
class StepResult:
    """What one batch produced: closed bars per interval, and the late trades (as row frames)."""

    closed: dict[str, pl.DataFrame]
    late: pl.DataFrame
    trades: int
    #: The trade rows that counted (not late), in log order: what the detectors see.
    on_time: pl.DataFrame = field(default_factory=lambda: empty_rows())


@dataclass
class BarState:
    """Open windows of one ``trades`` partition, per interval, and its event-time high mark.

    Memory is bounded by symbols × open windows: trades are folded into partial bars as they
    come, never kept.
    """

    intervals: tuple[str, ...] = tuple(INTERVALS)
    lateness_ms: int = 2_000
    max_ts_ms: int | None = None
    open: dict[str, pl.DataFrame] = field(default_factory=dict)
    #: Earliest end of any open window: nothing can close before the watermark reaches it.
    next_due_ms: int | None = None

    def __post_init__(self) -> None:
        # 1m first: rollups are fed by the 1m bars that close in the same step.
        self.intervals = tuple(sorted(self.intervals, key=INTERVALS.__getitem__))
        for name in self.intervals:
            self.open.setdefault(name, empty_bars())

    @property
    def watermark_ms(self) -> int | None:
        return None if self.max_ts_ms is None else self.max_ts_ms - self.lateness_ms

    def step(self, rows: pl.DataFrame) -> StepResult:
        """Fold one decoded batch (log order) in; close what the watermark has passed."""
        minute = INTERVALS["1m"]
        prev = self.max_ts_ms if self.max_ts_ms is not None else -(2**62)
        if rows.height:
            # Newest event time seen *before* each row, in log order (trades and heartbeats).
            seen_before = rows["ts_ms"].cum_max().shift(1, fill_value=prev).clip(lower_bound=prev)
            rows = rows.with_columns(seen_before=seen_before)
            trades = rows.filter(~pl.col("hb"))
            end = pl.col("ts_ms") - pl.col("ts_ms") % minute + minute
            is_late = end + self.lateness_ms <= pl.col("seen_before")
            late = trades.filter(is_late).drop("seen_before")
            on_time = trades.filter(~is_late)
            batch_max = int(rows["ts_ms"].max())  # type: ignore[arg-type]
            self.max_ts_ms = max(prev, batch_max) if self.max_ts_ms is not None else batch_max
            if on_time.height:
                fresh = merge(trades_as_bars(on_time, minute))
                self.open["1m"] = combine(self.open["1m"], fresh)
                first_end = int(fresh["start_ms"].min()) + minute  # type: ignore[arg-type]
                if self.next_due_ms is None or first_end < self.next_due_ms:
                    self.next_due_ms = first_end
        else:
            late, on_time = empty_rows(), empty_rows()
        watermark = self.watermark_ms
        if self.next_due_ms is None or watermark is None or watermark < self.next_due_ms:
            return StepResult({}, late, on_time.height, on_time)
        return StepResult(self._close(watermark), late, on_time.height, on_time)

    def flush(self) -> dict[str, pl.DataFrame]:
        """End of input: close every open window."""
        return self._close(None)

    def _close(self, watermark_ms: int | None) -> dict[str, pl.DataFrame]:
        closed: dict[str, pl.DataFrame] = {}
        for name in self.intervals:
            frame = self.open[name]
            if name != "1m" and closed.get("1m") is not None and closed["1m"].height:
                frame = combine(frame, merge(closed["1m"], INTERVALS[name]))
            if watermark_ms is None:
                done, frame = frame, empty_bars()
            else:
                due = pl.col("start_ms") + INTERVALS[name] <= watermark_ms
                done, frame = frame.filter(due), frame.filter(~due)
            self.open[name] = frame
            closed[name] = done.sort(KEYS)
        ends = [
            int(frame["start_ms"].min()) + INTERVALS[name]  # type: ignore[arg-type]
            for name, frame in self.open.items()
            if frame.height
        ]
        self.next_due_ms = min(ends) if ends else None
        return closed

    def open_windows(self) -> dict[str, int]:
        return {name: frame.height for name, frame in self.open.items()}


# --------------------------------------------------------------------------- output


def _decimal_text(units: pl.Expr, scale: int) -> pl.Expr:
    """Non-negative scaled integers → exact decimal strings with at least 8 decimals (like
    records.format_scaled): whole and fraction by integer division, so nothing is rounded;
    trailing zeros beyond the 8th decimal are dropped."""
    base = 10**scale
    whole = (units // base).cast(pl.String)
    frac = (units % base).cast(pl.String).str.zfill(scale)
    if scale > DECIMALS:
        frac = frac.str.replace(r"^([0-9]{8}[0-9]*?)0*$", "${1}")
    return pl.concat_str([whole, pl.lit("."), frac])


def _vwap_units(quote: pl.Expr, volume: pl.Expr) -> pl.Expr:
    """quote (1e-16) / volume (1e-8) → price units (1e-8), rounded half-even, integers only."""
    q = quote // volume
    r = quote % volume
    up = (2 * r > volume) | ((2 * r == volume) & (q % 2 == 1))
    return q + up.cast(pl.Int128)


def bar_frame(bars: pl.DataFrame, interval: str) -> pl.DataFrame:
    """Closed kernel bars → the wire format (records.BAR_FIELDS) as a frame of exact strings."""
    length = INTERVALS[interval]
    return bars.select(
        v=pl.lit(SCHEMA_VERSION, dtype=pl.Int64),
        venue="venue",
        symbol="symbol",
        interval=pl.lit(interval),
        start_ms="start_ms",
        end_ms=pl.col("start_ms") + length,
        open=_decimal_text(pl.col("open"), DECIMALS),
        high=_decimal_text(pl.col("high"), DECIMALS),
        low=_decimal_text(pl.col("low"), DECIMALS),
        close=_decimal_text(pl.col("close"), DECIMALS),
        volume=_decimal_text(pl.col("volume"), DECIMALS),
        quote_volume=_decimal_text(pl.col("quote"), 2 * DECIMALS),
        vwap=_decimal_text(_vwap_units(pl.col("quote"), pl.col("volume")), DECIMALS),
        trades="trades",
        buy_volume=_decimal_text(pl.col("buy_volume"), DECIMALS),
        buy_quote_volume=_decimal_text(pl.col("buy_quote"), 2 * DECIMALS),
        first_id="open_id",
        last_id="close_id",
    )


def to_records(bars: pl.DataFrame, interval: str) -> list[dict[str, object]]:
    """Closed kernel bars → wire-format Bar dicts (records.BAR_FIELDS), exact decimal strings."""
    return bar_frame(bars, interval).to_dicts()


def _records_slow(bars: pl.DataFrame, interval: str) -> list[dict[str, object]]:
    """The same with Python integers, one bar at a time: the reference the tests compare to."""
    length = INTERVALS[interval]
    out: list[dict[str, object]] = []
    for row in bars.iter_rows(named=True):
        volume, quote = row["volume"], row["quote"]
        out.append(
            {
                "v": SCHEMA_VERSION,
                "venue": row["venue"],
                "symbol": row["symbol"],
                "interval": interval,
                "start_ms": row["start_ms"],
                "end_ms": row["start_ms"] + length,
                "open": format_scaled(row["open"]),
                "high": format_scaled(row["high"]),
                "low": format_scaled(row["low"]),
                "close": format_scaled(row["close"]),
                "volume": format_scaled(volume),
                "quote_volume": format_scaled(quote, 2 * DECIMALS),
                "vwap": format_scaled(divide_rounded(quote, volume)),
                "trades": row["trades"],
                "buy_volume": format_scaled(row["buy_volume"]),
                "buy_quote_volume": format_scaled(row["buy_quote"], 2 * DECIMALS),
                "first_id": row["open_id"],
                "last_id": row["close_id"],
            }
        )
    return out
