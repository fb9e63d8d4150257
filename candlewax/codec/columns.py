"""Trades and bars as columns: the codec's vectorized half.

**The fast path is the exact path, faster.** :func:`decode_batch` turns a batch of ``trades``
messages into kernel rows. A message takes the fast path only if it is *canonical*: byte for
byte what :meth:`Trade.encode` / :meth:`Heartbeat.encode` (or
:func:`~candlewax.codec.records.encode_trades` for arrays) would write for the record it holds
— fixed member order, no whitespace, no escapes, every value in its canonical spelling, checked
by one regular expression built from the same patterns as the exact decoder. A canonical
message has exactly one reading (no repeated member, nothing a JSON parser may read two ways),
so the vectorized parse gives the record the exact decoder gives; anything else, valid or not,
is decoded message by message by :func:`~candlewax.codec.records.decode_message`, the authority.
The fast path never rejects anything itself. The differential fuzz in the tests holds both to
that, over mutants of real recordings.

The column encoders (:func:`trade_values`, :func:`bar_values`) write the same canonical bytes
as the records' ``encode()``, column-wise, for the producers that make millions of messages
(the synthetic market, the backtest's archive reader, the bars step).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import orjson
import polars as pl

from candlewax.codec import rules
from candlewax.codec.records import (
    BAR_FIELDS,
    BAR_PRICES,
    BAR_QUOTES,
    BAR_VOLUMES,
    QUOTE_DECIMALS,
    TRADE_FIELDS,
    Gap,
    Heartbeat,
    Marker,
    Rejected,
    Since,
    decode_message,
)
from candlewax.codec.rules import (
    DECIMALS,
    ID_PATTERN,
    MAX_ARRAY_ITEMS,
    MAX_MESSAGE_BYTES,
    MAX_NOTIONAL,
    MAX_TS_MS,
    MIN_TS_MS,
    SCALE,
    SCHEMA_VERSION,
    SYMBOL_PATTERN,
    VENUE_PATTERN,
    to_scaled,
)

#: Columns of a decoded batch, in log order: the bar kernel's input (``flows/barmath.py``).
#: Prices and quantities are scaled integers (units of 1e-8); ``off`` is the message's offset.
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

# --------------------------------------------------------------------------- canonical form
# Timestamps in range have 12 or 13 digits (946684800000 .. 4102444799999; the range itself is
# checked on the values). Decimals: at most 14 whole digits and 8 significant decimals, then
# only zeros, 38 digits in all (what a Decimal(38, 8) cast reads) — a subset of what
# rules.decimal accepts.
_TS = r"[1-9][0-9]{11,12}"
_DEC = r"(?:0|[1-9][0-9]{0,13})(?:\.[0-9]{1,8}0{0,16})?"
_TRADE = (
    r'\{"v":1,"venue":"' + VENUE_PATTERN + r'","symbol":"' + SYMBOL_PATTERN + r'","id":"'
    + ID_PATTERN + r'","price":"' + _DEC + r'","qty":"' + _DEC
    + r'","side":(?:null|"buy"|"sell"),"ts_ms":' + _TS + r',"recv_ms":(?:null|' + _TS + r")\}"
)  # fmt: skip
_HEARTBEAT = r'\{"v":1,"type":"heartbeat","venue":"' + VENUE_PATTERN + r'","ts_ms":' + _TS + r"\}"
#: One canonical record (a trade or a heartbeat), the whole text.
CANONICAL_RECORD = rf"^(?:{_TRADE}|{_HEARTBEAT})$"

_JSON_SCHEMA = {
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


@dataclass
class Decoded:
    """A batch of messages decoded: valid rows in log order, and what was rejected.

    ``rejected`` holds (index of the message in the batch, rejection) pairs; ``markers`` the
    (Kafka offset, marker) pairs of the batch's :class:`Since` / :class:`Gap` records, in log
    order; ``exact`` counts the messages the exact decoder read (non-canonical ones).
    """

    rows: pl.DataFrame
    rejected: list[tuple[int, Rejected]] = field(default_factory=list)
    exact: int = 0
    markers: list[tuple[int, Marker]] = field(default_factory=list)


def empty_rows() -> pl.DataFrame:
    return pl.DataFrame(schema=ROW_SCHEMA)


def decode_batch(values: list[bytes | None], offsets: list[int] | None = None) -> Decoded:
    """Decode Kafka message values (JSON objects or arrays of them) into kernel rows.

    ``offsets`` (default 0..n-1) are the messages' Kafka offsets, kept per row as ``off``.
    Canonical messages are read column-wise; the others one by one by the exact decoder; the
    rows come out in log order either way.
    """
    if offsets is None:
        offsets = list(range(len(values)))
    if not values:
        return Decoded(empty_rows())
    fast, slow = _fast_rows(values, offsets)
    if not slow:
        return Decoded(fast.drop("msg"))
    rows, rejected, markers = _exact_rows(values, offsets, slow)
    merged = pl.concat([fast, rows]).sort("msg", maintain_order=True).drop("msg")
    return Decoded(merged, rejected, exact=len(slow), markers=markers)


def _texts(values: list[bytes | None]) -> pl.Series:
    raw = pl.Series("raw", values, dtype=pl.Binary)
    try:
        return raw.cast(pl.String)
    except pl.exceptions.ComputeError:  # some value is not UTF-8: the exact path says which
        return pl.Series("raw", [_utf8(v) for v in values], dtype=pl.String)


def _utf8(value: bytes | None) -> str | None:
    if value is None:
        return None
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _fast_rows(values: list[bytes | None], offsets: list[int]) -> tuple[pl.DataFrame, list[int]]:
    """Rows of the canonical messages (with their batch index ``msg``), and the indices of the
    messages left to the exact decoder."""
    text = _texts(values)
    frame = pl.DataFrame({"item": text, "off": pl.Series(offsets, dtype=pl.Int64)}).with_row_index(
        "msg"
    )
    slow: set[int] = set()
    whole = True  # the items are the messages themselves, every one of them
    if frame["item"].str.starts_with("[").any():
        whole = False
        # No canonical message holds a newline (no whitespace, no control character in any
        # value): the messages that do go to the exact decoder first, so that the newlines
        # below, which split arrays and join the NDJSON buffer, are only ever ours. (Without
        # arrays no such step is needed: the pattern is anchored at both ends of the text and
        # none of its classes admits a newline.)
        newline = frame["item"].str.contains("\n", literal=True).fill_null(True)
        if newline.any():
            slow = set(frame.filter(newline)["msg"].to_list())
            frame = frame.filter(~newline)
        # "[{..},{..}]" → one item per record. A "},{" inside a string would leave a broken
        # item, which is not canonical, so the whole message goes to the exact decoder.
        array = pl.col("item").str.starts_with("[") & pl.col("item").str.ends_with("]")
        inner = pl.col("item").str.slice(1, pl.col("item").str.len_bytes() - 2)
        frame = (
            frame.with_columns(
                n=pl.when(array).then(inner.str.count_matches("},{", literal=True) + 1),
                item=pl.when(array)
                .then(inner.str.replace_all("},{", "}\n{", literal=True))
                .otherwise(pl.col("item"))
                .str.split("\n"),
            )
            .explode("item")
            # "[]" is a message without trades; an empty message is not ("" is no JSON).
            .filter(pl.col("n").is_null() | (pl.col("item") != ""))
            .with_columns(ok=pl.col("n").fill_null(1) <= MAX_ARRAY_ITEMS)
            .drop("n")
        )
        ok = frame["ok"] & frame["item"].str.contains(CANONICAL_RECORD).fill_null(False)
        frame = frame.drop("ok")
    else:
        ok = frame["item"].str.contains(CANONICAL_RECORD).fill_null(False)
    if not ok.all():
        whole = False
        failed = set(frame.filter(~ok)["msg"].to_list())
        slow |= failed
        frame = frame.filter(~pl.col("msg").is_in(list(failed)))
    rows = _parse(frame, values if whole else None)  # type: ignore[arg-type]
    if rows is None:  # never for canonical text; if it ever happens, the exact path decides
        return _empty_fast(), list(range(len(values)))
    passed = rows["ok"]
    if not passed.all():
        failed = set(rows.filter(~passed)["msg"].to_list())
        slow |= failed
        rows = rows.filter(~pl.col("msg").is_in(list(failed)))
    # Messages without any item ("[]", or every item dropped) are nowhere: nothing to decode.
    return rows.drop("ok"), sorted(slow)


def _empty_fast() -> pl.DataFrame:
    return empty_rows().with_columns(msg=pl.lit(0, dtype=pl.UInt32)).head(0)


def _parse(frame: pl.DataFrame, whole: list[bytes] | None) -> pl.DataFrame | None:
    """Read the canonical items; ``whole`` are the raw messages when the items are exactly
    them (the common batch: one bytes join, no copy through Polars)."""
    if not frame.height:
        return _empty_fast().with_columns(ok=pl.lit(True))
    buf = b"\n".join(whole) if whole is not None else frame["item"].str.join("\n").item().encode()
    try:
        df = pl.read_ndjson(io.BytesIO(buf), schema=_JSON_SCHEMA)
    except pl.exceptions.PolarsError:
        return None
    if df.height != frame.height:
        return None
    try:
        return df.with_columns(msg=frame["msg"], off=frame["off"]).select(_ROW_EXPRS)
    except pl.exceptions.PolarsError:
        return None


def _row_exprs() -> list[pl.Expr]:
    # The canonical form admits only "heartbeat" as a type, and a canonical heartbeat has no
    # trade members: read_ndjson leaves them null.
    hb = pl.col("type").is_not_null()
    # Canonical text casts exactly: at most 14 + 8 significant digits, then zeros.
    p = pl.col("price").cast(pl.Decimal(38, DECIMALS)).to_physical()
    q = pl.col("qty").cast(pl.Decimal(38, DECIMALS)).to_physical()
    in_range = pl.col("ts_ms").is_between(MIN_TS_MS, MAX_TS_MS, closed="left")
    recv_ok = pl.col("recv_ms").is_null() | pl.col("recv_ms").is_between(
        MIN_TS_MS, MAX_TS_MS, closed="left"
    )
    # Zero after scaling is no price; near MAX_NOTIONAL the exact path decides (float check
    # with a 10x margin, so rounding can only send a valid trade to the exact path).
    limit = MAX_NOTIONAL / 10 * SCALE * SCALE
    sane = (p > 0) & (q > 0) & (p.cast(pl.Float64) * q.cast(pl.Float64) < limit) & recv_ok
    return [
        (in_range & (hb | sane)).fill_null(False).alias("ok"),
        hb.alias("hb"),
        pl.col("venue"),
        pl.col("symbol"),
        pl.col("id"),
        p.alias("p"),
        q.alias("q"),
        (pl.col("side") == "buy").alias("buy"),
        pl.col("ts_ms"),
        pl.col("recv_ms"),
        pl.col("off"),
        pl.col("msg"),
    ]


_ROW_EXPRS = _row_exprs()


def _exact_rows(
    values: list[bytes | None], offsets: list[int], indices: list[int]
) -> tuple[pl.DataFrame, list[tuple[int, Rejected]], list[tuple[int, Marker]]]:
    """The messages at ``indices``, one by one through the exact decoder."""
    cols: dict[str, list[object]] = {name: [] for name in (*ROW_SCHEMA, "msg")}
    rejected: list[tuple[int, Rejected]] = []
    markers: list[tuple[int, Marker]] = []
    for index in indices:
        good, bad = decode_message(values[index])
        rejected.extend((index, r) for r in bad)
        offset = offsets[index]
        for rec in good:
            row: tuple[object, ...]
            if isinstance(rec, Since | Gap):
                markers.append((offset, rec))
                continue
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
            cols["msg"].append(index)
    schema = {**ROW_SCHEMA, "msg": pl.UInt32()}
    return pl.DataFrame(cols, schema=schema), rejected, markers


# --------------------------------------------------------------------------- encoders


def decimal_text(units: pl.Expr, scale: int = DECIMALS) -> pl.Expr:
    """Non-negative scaled integers → exact decimal strings with at least 8 decimals (like
    :func:`~candlewax.codec.rules.format_scaled`): whole and fraction by integer division, so
    nothing is rounded; trailing zeros beyond the 8th decimal are dropped."""
    base = 10**scale
    whole = (units // base).cast(pl.String)
    frac = (units % base).cast(pl.String).str.zfill(scale)
    if scale > DECIMALS:
        frac = frac.str.replace(r"^([0-9]{8}[0-9]*?)0*$", "${1}")
    return pl.concat_str([whole, pl.lit("."), frac])


def _quoted(expr: pl.Expr) -> pl.Expr:
    return pl.concat_str([pl.lit('"'), expr, pl.lit('"')])


def _nullable(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String).fill_null("null")


def trade_values(
    venue: pl.Expr,
    symbol: pl.Expr,
    id: pl.Expr,
    price: pl.Expr,
    qty: pl.Expr,
    side: pl.Expr,
    ts_ms: pl.Expr,
    recv_ms: pl.Expr,
) -> pl.Expr:
    """The canonical message of each row — what ``Trade(...).encode()`` writes — as one
    String expression. Inputs must already be valid (names of their charset, canonical
    decimals, ``side`` "buy"/"sell"/null): this writes, it does not check."""
    parts: list[pl.Expr] = [
        pl.lit(f'{{"v":{SCHEMA_VERSION},"venue":"'),
        venue,
        pl.lit('","symbol":"'),
        symbol,
        pl.lit('","id":"'),
        id,
        pl.lit('","price":"'),
        price,
        pl.lit('","qty":"'),
        qty,
        pl.lit('","side":'),
        _nullable(_quoted(side)),
        pl.lit(',"ts_ms":'),
        ts_ms.cast(pl.String),
        pl.lit(',"recv_ms":'),
        _nullable(recv_ms),
        pl.lit("}"),
    ]
    return pl.concat_str(parts)


_CLEAN_TRADE = pl.all_horizontal(
    pl.col("venue").str.contains(f"^{VENUE_PATTERN}$"),
    pl.col("symbol").str.contains(f"^{SYMBOL_PATTERN}$"),
    pl.col("id").str.contains(f"^{ID_PATTERN}$"),
    pl.col("price").str.contains(f"^{rules.DECIMAL_PATTERN}$")
    & (pl.col("price").str.len_bytes() <= 64),
    pl.col("qty").str.contains(f"^{rules.DECIMAL_PATTERN}$")
    & (pl.col("qty").str.len_bytes() <= 64),
    pl.col("side").is_null() | pl.col("side").is_in(list(rules.SIDES)),
).fill_null(False)


_CANONICAL_COLUMNS = pl.all_horizontal(
    pl.col("venue").str.contains(f"^(?:{VENUE_PATTERN})$"),
    pl.col("symbol").str.contains(f"^(?:{SYMBOL_PATTERN})$"),
    pl.col("id").str.contains(f"^(?:{ID_PATTERN})$"),
    pl.col("price").str.contains(f"^{_DEC}$"),
    pl.col("qty").str.contains(f"^{_DEC}$"),
    pl.col("side").is_null() | pl.col("side").is_in(list(rules.SIDES)),
    pl.col("ts_ms").is_between(10**11, 10**13 - 1),  # _TS: 12 or 13 digits
    pl.col("recv_ms").is_null() | pl.col("recv_ms").is_between(10**11, 10**13 - 1),
).fill_null(False)


def decode_trade_columns(frame: pl.DataFrame) -> pl.DataFrame | None:
    """Kernel rows of a frame of trade columns (strings for venue … qty and side, integers for
    ``ts_ms``, ``recv_ms`` and the offset ``off``), one trade per row in log order — without
    writing and re-reading JSON, or None if any row needs the exact decoder.

    A row qualifies when :func:`trade_messages` would write it as a canonical message that
    :func:`decode_batch` reads on its fast path: every column in the canonical record's own
    pattern (the pieces :data:`CANONICAL_RECORD` is made of) and the fast path's value checks
    passed. Then the rows are exactly those ``decode_batch(trade_messages(frame))`` gives; when
    one row does not qualify the caller takes that path, which rejects it with its reason.
    """
    if not frame.height:
        return empty_rows()
    canonical = frame.select(_CANONICAL_COLUMNS).to_series()
    if not canonical.all():
        return None
    rows = frame.select(
        *TRADE_FIELDS[1:], "off", type=pl.lit(None, dtype=pl.String), msg=pl.lit(0, pl.UInt32)
    ).select(_ROW_EXPRS)
    if not rows["ok"].all():
        return None
    return rows.drop("ok", "msg")


def trade_messages(frame: pl.DataFrame) -> list[bytes]:
    """One ``trades`` message per row of a frame with the trade columns (strings; ``ts_ms``,
    ``recv_ms`` integers) — safe for any values, such as a Parquet file's.

    Rows whose values all keep to their charsets are written by :func:`trade_values` (the
    canonical bytes); any other row by a JSON encoder, escaped, so that the decoder sees the
    values as they are and rejects them with their reason — never as injected members.
    """
    if not frame.height:
        return []
    c = pl.col
    canonical = frame.select(
        trade_values(
            c("venue"),
            c("symbol"),
            c("id"),
            c("price"),
            c("qty"),
            c("side"),
            c("ts_ms"),
            c("recv_ms"),
        ).alias("value"),
        _CLEAN_TRADE.alias("clean"),
    )
    values = [v.encode() for v in canonical["value"].to_list()]
    if canonical["clean"].all():
        return values
    for index in canonical.with_row_index().filter(~pl.col("clean"))["index"].to_list():
        row = frame.row(index, named=True)
        values[index] = orjson.dumps(
            {"v": SCHEMA_VERSION, **{k: row.get(k) for k in TRADE_FIELDS if k != "v"}},
            default=str,
        )
    return values


def bar_values(frame: pl.DataFrame) -> list[bytes]:
    """Wire-format bar rows (columns :data:`~candlewax.codec.records.BAR_FIELDS`) → the bytes
    ``Bar.encode()`` writes for each. Names and decimals are escape-free by their charsets, so
    Polars' JSON lines are the canonical form."""
    if not frame.height:
        return []
    return frame.select(BAR_FIELDS).write_ndjson().encode().splitlines()


def bar_columns(kernel: pl.DataFrame, interval: str) -> pl.DataFrame:
    """Closed kernel bars (scaled integers and the flags ``complete``, ``gaps``, see
    ``flows/barmath.py``) → the wire format of :data:`~candlewax.codec.records.BAR_FIELDS` as
    exact strings."""
    length = rules.INTERVALS.get(interval, 0)  # 0: a bar by activity, which has its end_ms
    amounts = {
        **{name: (name, DECIMALS) for name in ("open", "high", "low", "close")},
        **{name: (name, DECIMALS) for name in BAR_VOLUMES},
        "quote_volume": ("quote", QUOTE_DECIMALS),
        "buy_quote_volume": ("buy_quote", QUOTE_DECIMALS),
    }
    assert set(amounts) | {"vwap"} == {*BAR_PRICES, *BAR_VOLUMES, *BAR_QUOTES}
    return kernel.select(
        v=pl.lit(SCHEMA_VERSION, dtype=pl.Int64),
        venue="venue",
        symbol="symbol",
        interval=pl.lit(interval),
        start_ms="start_ms",
        # Calendar windows (1d) carry their end; fixed ones end one length later.
        end_ms=pl.col("end_ms") if "end_ms" in kernel.columns else pl.col("start_ms") + length,
        **{name: decimal_text(pl.col(col), scale) for name, (col, scale) in amounts.items()},
        # A flat bar (no trade, volume 0) has its one price as VWAP.
        vwap=decimal_text(
            pl.when(pl.col("volume") > 0)
            .then(_vwap_units(pl.col("quote"), pl.col("volume").clip(lower_bound=1)))
            .otherwise(pl.col("close"))
        ),
        trades="trades",
        first_id="open_id",
        last_id="close_id",
        complete="complete",
        gaps=pl.col("gaps").cast(pl.Int64),
    ).select(BAR_FIELDS)


def _vwap_units(quote: pl.Expr, volume: pl.Expr) -> pl.Expr:
    """quote (1e-16) / volume (1e-8) → price units (1e-8), rounded half-even, integers only."""
    q = quote // volume
    r = quote % volume
    up = (2 * r > volume) | ((2 * r == volume) & (q % 2 == 1))
    return q + up.cast(pl.Int128)


# --------------------------------------------------------------------------- trade files
# Replays (connectors/replay.py) read trade files in the file form of decode_record
# (from_file=True). A line that is one of the canonical trades below — or a canonical array of
# them — needs no check beyond this pattern: it is exactly what ``Trade.encode()`` writes for
# the trade the file form decodes from it, so the line itself is the message to publish. The
# pattern is a subset of the canonical form that also holds the value checks: positive
# decimals, ``price × qty`` below MAX_NOTIONAL (by digit counts: at most 13 whole digits in
# all), times inside 2000..2100 (a little inside: 950000000000 ..< 4100000000000). What it does
# not admit — valid or not — the file form reads line by line.
_FILE_FRACTION = r"(?:\.[0-9]{1,8}0{0,16})?"
_FILE_BELOW_ONE = r"0\.[0-9]{0,7}[1-9]0{0,16}"  # 0 < x < 1, at most 8 significant decimals
_FILE_TS = r"(?:9[5-9][0-9]{10}|[1-3][0-9]{12}|40[0-9]{11})"


def _positive_decimal(whole_digits: int, exact: bool) -> str:
    """A positive canonical decimal below ``10**whole_digits``; ``exact``: not below
    ``10**(whole_digits - 1)`` either (for one whole digit: any decimal below 10)."""
    if whole_digits == 0:
        return _FILE_BELOW_ONE
    if exact and whole_digits > 1:
        return rf"[1-9][0-9]{{{whole_digits - 1}}}{_FILE_FRACTION}"
    top = 0 if exact else whole_digits - 1
    return rf"(?:[1-9][0-9]{{0,{top}}}{_FILE_FRACTION}|{_FILE_BELOW_ONE})"


_FILE_PRICE_QTY = (
    "(?:"
    + "|".join(
        _positive_decimal(digits, exact=True) + r'","qty":"' + _positive_decimal(13 - digits, False)
        for digits in range(1, 14)
    )
    + ")"
)
_FILE_TRADE = (
    r'\{"v":1,"venue":"' + VENUE_PATTERN + r'","symbol":"' + SYMBOL_PATTERN + r'","id":"'
    + ID_PATTERN + r'","price":"' + _FILE_PRICE_QTY + r'","side":(?:null|"buy"|"sell"),"ts_ms":'
    + _FILE_TS + r',"recv_ms":(?:null|' + _FILE_TS + r")\}"
)  # fmt: skip
#: One trade of a trade file that is its own canonical message, the whole text.
FILE_TRADE = rf"^{_FILE_TRADE}$"
_FILE_HEAD = r'^\{"v":1,"venue":"([^"]+)","symbol":"([^"]+)"'
_FILE_TAIL = r',"ts_ms":([0-9]+),"recv_ms":(null|[0-9]+)\}$'


@dataclass
class FileTrades:
    """The lines of a trade file that are canonical trades, column-wise (:func:`file_trades`).

    ``rows`` has one row per trade, in line order: ``msg`` (the line's index in the batch),
    ``venue``, ``key`` (``venue:SYMBOL``), ``ts_ms``, ``recv_ms`` and, when some line is an array
    (``arrays``), ``item``: the trade's own text (for a single-trade line, the line itself).
    ``slow`` are the indices of the lines the file form must read one by one.
    """

    rows: pl.DataFrame
    slow: list[int]
    arrays: bool


def file_trades(values: list[bytes] | pl.Series) -> FileTrades:
    """Which lines of a trade file are canonical trades (or canonical arrays of at most
    MAX_ARRAY_ITEMS of them, at most MAX_MESSAGE_BYTES long), and their keys and times.
    ``values`` are the lines as bytes, or as a String series (messages written from the rows
    of a CSV or Parquet file).

    For every line not in ``slow``, ``decode_record(obj, from_file=True)`` of each record gives a
    Trade whose ``encode()`` is the record's text, byte for byte; a ``[]`` line holds no trade
    and is in neither. Everything else — other spellings, heartbeats and markers, invalid input
    — is left to the file form (``slow``): this function never rejects anything itself.
    """
    text = (
        values.cast(pl.String).alias("item")
        if isinstance(values, pl.Series)
        else _texts(list[bytes | None](values))
    )
    frame = pl.DataFrame({"item": text}).with_row_index("msg")
    arrays = bool(frame["item"].str.starts_with("[").any())
    item = pl.col("item")
    big = item.str.len_bytes() > MAX_MESSAGE_BYTES
    if arrays:
        array = item.str.starts_with("[") & item.str.ends_with("]")
        inner = item.str.slice(1, item.str.len_bytes() - 2)
        frame = (
            frame.with_columns(
                big=big | item.str.contains("\n", literal=True),
                n=pl.when(array).then(inner.str.count_matches("},{", literal=True) + 1),
                item=pl.when(array)
                .then(inner.str.replace_all("},{", "}\n{", literal=True))
                .otherwise(item)
                .str.split("\n"),
            )
            .explode("item")
            .filter(pl.col("n").is_null() | (item != ""))
        )
        ok = ~pl.col("big").fill_null(True) & (pl.col("n").fill_null(1) <= MAX_ARRAY_ITEMS)
        frame = frame.with_columns(ok=ok & item.str.contains(FILE_TRADE).fill_null(False))
    else:
        frame = frame.with_columns(ok=~big.fill_null(True) & item.str.contains(FILE_TRADE))
    passed = frame["ok"].fill_null(False)
    slow: list[int] = []
    if not passed.all():
        failed = frame.filter(~passed)["msg"].unique().sort()
        slow = failed.to_list()
        frame = frame.filter(~pl.col("msg").is_in(failed.implode()))
    rows = frame.select(
        pl.col("msg"),
        head=item.str.extract_groups(_FILE_HEAD),
        tail=item.str.extract_groups(_FILE_TAIL),
        **({"item": item} if arrays else {}),
    ).select(
        pl.col("msg"),
        venue=pl.col("head").struct.field("1"),
        key=pl.concat_str(
            pl.col("head").struct.field("1"), pl.lit(":"), pl.col("head").struct.field("2")
        ),
        ts_ms=pl.col("tail").struct.field("1").cast(pl.Int64),
        recv_ms=pl.col("tail").struct.field("2").replace("null", None).cast(pl.Int64),
        **({"item": item} if arrays else {}),
    )
    return FileTrades(rows, slow, arrays)
