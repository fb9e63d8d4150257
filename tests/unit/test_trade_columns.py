"""The archive's column-wise decode (``decode_trade_columns``) against the path it replaces:
write each row as a wire trade (``trade_messages``) and decode the batch (``decode_batch``).

It must give exactly those rows when every row is canonical, and refuse (None) whenever any
row would not be read on the fast path — so the caller's fallback rejects it with its reason."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from candlewax.codec import rules
from candlewax.codec.columns import decode_batch, decode_trade_columns, trade_messages

_SCHEMA = {
    "venue": pl.String,
    "symbol": pl.String,
    "id": pl.String,
    "price": pl.String,
    "qty": pl.String,
    "side": pl.String,
    "ts_ms": pl.Int64,
    "recv_ms": pl.Int64,
    "off": pl.Int64,
}

names = st.from_regex(rules.VENUE_PATTERN, fullmatch=True)
symbols = st.from_regex(rules.SYMBOL_PATTERN, fullmatch=True)
ids = st.from_regex(rules.ID_PATTERN, fullmatch=True)
amounts = st.from_regex(r"(0|[1-9][0-9]{0,13})(\.[0-9]{1,8}0{0,3})?", fullmatch=True)
times = st.integers(rules.MIN_TS_MS, rules.MAX_TS_MS - 1)
# Values a damaged or hostile file may hold: out of charset, non-canonical spellings, zero,
# too many decimals, out-of-range times, injection attempts.
hostile_text = st.sampled_from(
    ['a","symbol":"X', "", " 1", "1e5", "01", "1.", ".5", "-1", "0", "0.000000001", "1" * 15,
     "BTC USDT", "é", "1.123456789", "NaN", "\\u0031", "\n"]
)  # fmt: skip
hostile_int = st.sampled_from([0, -1, 10**11 - 1, 10**13, rules.MAX_TS_MS, 2**62])


def _row(draw: st.DrawFn, hostile: bool) -> dict[str, object]:
    row: dict[str, object] = {
        "venue": draw(names),
        "symbol": draw(symbols),
        "id": draw(ids),
        "price": draw(amounts),
        "qty": draw(amounts),
        "side": draw(st.sampled_from(["buy", "sell", None])),
        "ts_ms": draw(times),
        "recv_ms": draw(st.none() | times),
    }
    if hostile:
        name = draw(st.sampled_from([*row, "side"]))
        if name in ("ts_ms", "recv_ms"):
            row[name] = draw(hostile_int)
        elif name == "side":
            row[name] = draw(st.sampled_from(["BUY", "", "b"]))
        else:
            row[name] = draw(hostile_text)
    return row


@st.composite
def frames(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(1, 12))
    rows = [_row(draw, draw(st.integers(0, 9)) == 0) for _ in range(n)]
    offsets = sorted(draw(st.lists(st.integers(0, 10**9), min_size=n, max_size=n)))
    for row, off in zip(rows, offsets, strict=True):
        row["off"] = off
    return pl.DataFrame(rows, schema=_SCHEMA)


@settings(max_examples=200, deadline=None)
@given(frames())
def test_column_decode_equals_the_wire_round_trip(frame: pl.DataFrame) -> None:
    wire = decode_batch(trade_messages(frame.drop("off")), frame["off"].to_list())  # type: ignore[arg-type]
    rows = decode_trade_columns(frame)
    if rows is None:  # some row is not fast-path canonical: the caller takes the wire path
        assert wire.rejected or wire.exact
        return
    assert not wire.rejected and wire.exact == 0
    assert rows.schema == wire.rows.schema
    assert rows.to_dicts() == wire.rows.to_dicts()


def test_a_hostile_row_sends_the_whole_slice_to_the_wire_path() -> None:
    good = {"venue": "binance", "symbol": "BTCUSDT", "id": "1", "price": "100.5", "qty": "0.1",
            "side": "buy", "ts_ms": 1_700_000_000_000, "recv_ms": None, "off": 7}  # fmt: skip
    bad = {**good, "id": "2", "price": "1e2", "off": 8}
    assert decode_trade_columns(pl.DataFrame([good], schema=_SCHEMA)) is not None
    assert decode_trade_columns(pl.DataFrame([good, bad], schema=_SCHEMA)) is None
    wire = decode_batch(trade_messages(pl.DataFrame([good, bad], schema=_SCHEMA).drop("off")))
    assert [r.reason for _, r in wire.rejected] == ["bad_decimal"]
