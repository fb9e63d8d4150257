"""The bar kernel against independent computations: a plain-Decimal reference (tests/reference.py)
under random batchings, DuckDB SQL on the real BTCUSDT capture, and the exact decode path."""

from __future__ import annotations

import itertools
import random
from functools import cache

import duckdb
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewax.records import INTERVALS, Heartbeat, Trade, encode_trades
from connectors.replay import iter_file
from flows.barmath import (
    BAR_SCHEMA,
    BarState,
    _records_slow,
    _slow_decode,
    bar_frame,
    decode_batch,
    to_records,
)
from tests.conftest import BTCUSDT_GZ
from tests.reference import DECIMAL_FIELDS, as_decimals, reference_bars

T0 = 1_723_161_240_000  # 2024-08-08 23:54:00 UTC


@cache
def btcusdt() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)


def run_kernel(
    values: list[bytes], cuts: list[int], lateness_ms: int = 2_000, final: bool = True
) -> tuple[dict[str, list[dict[str, object]]], int]:
    """Feed ``values`` cut at ``cuts``; return bars per interval (wire format) and late count."""
    state = BarState(lateness_ms=lateness_ms)
    bars: dict[str, list[dict[str, object]]] = {k: [] for k in INTERVALS}
    late = 0
    edges = [0, *sorted(set(cuts)), len(values)]
    for lo, hi in itertools.pairwise(edges):
        if lo == hi:
            continue
        result = state.step(decode_batch(values[lo:hi]).rows)
        late += result.late.height
        for name, frame in result.closed.items():
            bars[name] += to_records(frame, name)
    if final:
        for name, frame in state.flush().items():
            bars[name] += to_records(frame, name)
    return bars, late


def normalized(bars: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(
        (as_decimals(b) for b in bars), key=lambda b: (b["venue"], b["symbol"], b["start_ms"])
    )


# --------------------------------------------------------------------------- the real capture


def test_btcusdt_capture_matches_duckdb_for_all_nine_kline_fields() -> None:
    """The complete minutes of the capture (23:55-23:59) against SQL over the raw trades.

    Binance kline semantics: volume = Σqty, quote = Σprice·qty, taker-buy = aggressor buy
    (``m == false``), open/close = first/last trade by id.
    """
    trades = btcusdt()
    bars, late = run_kernel([t.encode() for t in trades], cuts=list(range(0, len(trades), 997)))
    assert late == 0
    raw = pl.DataFrame(  # noqa: F841 - read by name in the SQL below
        {
            "id": [int(t.id) for t in trades],
            "price": [t.price for t in trades],
            "qty": [t.qty for t in trades],
            "buyer_maker": [t.side == "sell" for t in trades],
            "ts": [t.ts_ms for t in trades],
        }
    )
    expected = duckdb.sql(
        """
        select ts // 60000 * 60000 as start_ms,
               arg_min(price::decimal(38,8), id) as open, max(price::decimal(38,8)) as high,
               min(price::decimal(38,8)) as low, arg_max(price::decimal(38,8), id) as close,
               sum(qty::decimal(38,8)) as volume,
               sum(price::decimal(38,8) * qty::decimal(38,8)) as quote_volume,
               count(*) as trades,
               sum(case when not buyer_maker then qty::decimal(38,8) else 0 end) as buy_volume,
               sum(case when not buyer_maker then price::decimal(38,8) * qty::decimal(38,8) else 0 end)
                 as buy_quote_volume,
               min(id) as first_id, max(id) as last_id
        from raw group by 1 order by 1
        """
    ).pl()
    complete = expected.filter(pl.col("start_ms").is_between(T0 + 60_000, T0 + 5 * 60_000))
    assert complete.height == 5
    ours = {b["start_ms"]: as_decimals(b) for b in bars["1m"]}
    for row in complete.iter_rows(named=True):
        bar = ours[row["start_ms"]]
        for name in (f for f in DECIMAL_FIELDS if f != "vwap"):  # Binance klines have no vwap
            assert bar[name] == row[name], (row["start_ms"], name)
        assert bar["trades"] == row["trades"]
        assert (bar["first_id"], bar["last_id"]) == (str(row["first_id"]), str(row["last_id"]))
    # Every closed bar of every interval equals the reference computed straight from trades.
    for name in INTERVALS:
        assert normalized(bars[name]) == normalized(reference_bars(trades, name)), name


@pytest.mark.parametrize("batch", [1, 13, 500, 100_000])
def test_same_bars_whatever_the_batch_size(batch: int) -> None:
    trades = btcusdt()[:3000] if batch == 1 else btcusdt()
    values = [t.encode() for t in trades]
    got, _ = run_kernel(values, cuts=list(range(0, len(values), batch)))
    want, _ = run_kernel(values, cuts=[])
    assert got == want


# --------------------------------------------------------------------------- property tests


@st.composite
def trade_logs(draw: st.DrawFn) -> tuple[list[Trade | Heartbeat], list[int], int]:
    """A log of trades (a few symbols, out-of-order within a jitter) and heartbeats, plus cuts."""
    n = draw(st.integers(1, 120))
    lateness = draw(st.sampled_from([0, 500, 2_000, 30_000]))
    jitter = draw(st.sampled_from([0, 1_000, 5_000]))
    symbols = draw(
        st.lists(
            st.sampled_from(["BTCUSDT", "ETHUSDT", "SOLUSDT"]), min_size=1, max_size=3, unique=True
        )
    )
    log: list[Trade | Heartbeat] = []
    clock = T0 + draw(st.integers(0, 59_999))
    for i in range(n):
        clock += draw(st.integers(0, 40_000))
        if draw(st.integers(0, 9)) == 0:
            log.append(Heartbeat("x", clock))
            continue
        ts = max(T0, clock - draw(st.integers(0, jitter)))
        price = f"{draw(st.integers(1, 10**7))}.{draw(st.integers(0, 10**8 - 1)):08d}"
        qty = f"{draw(st.integers(0, 50))}.{draw(st.integers(1, 10**8 - 1)):08d}"
        side = draw(st.sampled_from(["buy", "sell", None]))
        log.append(Trade("x", draw(st.sampled_from(symbols)), str(i), price, qty, side, ts))
    cuts = draw(st.lists(st.integers(0, len(log)), max_size=8))
    return log, cuts, lateness


def replay_with_lateness(log: list[Trade | Heartbeat], lateness: int) -> tuple[list[Trade], int]:
    """Reference watermark: a trade is late if its 1m window ended ``lateness`` before the
    newest event time seen earlier in the log (trades and heartbeats)."""
    seen = None
    kept, late = [], 0
    for rec in log:
        if isinstance(rec, Trade):
            end = rec.ts_ms - rec.ts_ms % 60_000 + 60_000
            if seen is not None and end + lateness <= seen:
                late += 1
            else:
                kept.append(rec)
        seen = rec.ts_ms if seen is None else max(seen, rec.ts_ms)
    return kept, late


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trade_logs())
def test_kernel_equals_reference_for_any_log_and_batching(
    case: tuple[list, list[int], int],
) -> None:
    log, cuts, lateness = case
    bars, late = run_kernel([r.encode() for r in log], cuts, lateness_ms=lateness)
    kept, want_late = replay_with_lateness(log, lateness)
    assert late == want_late
    for name in INTERVALS:
        assert normalized(bars[name]) == normalized(reference_bars(kept, name)), name


@settings(max_examples=60, deadline=None)
@given(trade_logs())
def test_rollups_equal_bars_built_directly_from_trades(case: tuple[list, list[int], int]) -> None:
    log, cuts, _ = case
    trades = [r for r in log if isinstance(r, Trade)]
    bars, _ = run_kernel([t.encode() for t in trades], cuts, lateness_ms=10**9)  # nothing late
    for name in ("5m", "15m", "30m", "1h"):
        assert normalized(bars[name]) == normalized(reference_bars(trades, name))


# --------------------------------------------------------------------------- time


def test_windows_close_on_watermark_and_heartbeats_close_idle_symbols() -> None:
    state = BarState(lateness_ms=2_000)
    quiet = Trade("binance", "ETHUSDT", "1", "2600.5", "1", "buy", T0 + 10_000)
    result = state.step(decode_batch([quiet.encode()]).rows)
    assert not result.closed
    # Exchange time reaches the end of the minute + lateness: ETHUSDT closes with no new trade.
    beat = Heartbeat("binance", T0 + 60_000 + 2_000)
    result = state.step(decode_batch([beat.encode()]).rows)
    assert [b["symbol"] for b in to_records(result.closed["1m"], "1m")] == ["ETHUSDT"]
    assert state.open_windows()["1m"] == 0


def test_late_trades_are_reported_not_merged() -> None:
    first = Trade("binance", "BTCUSDT", "1", "100", "1", "buy", T0 + 1_000)
    later = Trade("binance", "BTCUSDT", "2", "101", "1", "buy", T0 + 63_000)
    late = Trade("binance", "BTCUSDT", "3", "999", "1", "buy", T0 + 30_000)
    state = BarState(lateness_ms=2_000)
    result = state.step(decode_batch([first.encode(), later.encode(), late.encode()]).rows)
    assert result.late["id"].to_list() == ["3"]
    (bar,) = to_records(result.closed["1m"], "1m")
    assert (bar["high"], bar["trades"]) == ("100.00000000", 1)


# --------------------------------------------------------------------------- decoding


def test_fast_path_is_taken_for_clean_batches() -> None:
    decoded = decode_batch([t.encode() for t in btcusdt()[:1000]])
    assert decoded.fast and decoded.rows.height == 1000 and not decoded.rejected
    arrays = [encode_trades(list(btcusdt()[i : i + 25])) for i in range(0, 1000, 25)]
    decoded_arrays = decode_batch(arrays, offsets=list(range(500, 540)))
    assert decoded_arrays.fast
    assert decoded_arrays.rows.drop("off").equals(decoded.rows.drop("off"))
    assert decoded_arrays.rows["off"].to_list() == [500 + i // 25 for i in range(1000)]


def test_bad_messages_are_rejected_with_offsets_and_neighbours_kept() -> None:
    good = [t.encode() for t in btcusdt()[:5]]
    values = [
        good[0],
        b"{not json",
        good[1],
        b'{"venue":"binance","symbol":"BTCUSDT","id":"9","price":"NaN","qty":"1","ts_ms":1723161253000}',
        good[2],
    ]
    decoded = decode_batch(values, offsets=[100, 101, 102, 103, 104])
    assert not decoded.fast
    assert decoded.rows["off"].to_list() == [100, 102, 104]
    assert [(i, r.reason) for i, r in decoded.rejected] == [(1, "json"), (3, "bad_decimal")]


_field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**16), 10**16),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "buy", "sell", "trade", "heartbeat", "binance", "BTCUSDT", "0", "1.5",
                     "61828.00000000", "1e3", "-1", "0.000000001", "1.000000000", "true", "NaN", "00012"]),
    st.text(max_size=6),
)  # fmt: skip


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    base = dict(Trade("binance", "BTCUSDT", "1", "61828.01", "0.5", "buy", T0, T0).to_dict())
    if draw(st.booleans()):
        base = {"v": 1, "type": "heartbeat", "venue": "binance", "ts_ms": T0}
    for _ in range(draw(st.integers(0, 3))):
        key = draw(
            st.sampled_from(
                ["v", "type", "venue", "symbol", "id", "price", "qty", "side", "ts_ms", "recv_ms"]
            )
        )
        if draw(st.integers(0, 4)) == 0:
            base.pop(key, None)
        else:
            base[key] = draw(_field_values)
    text = orjson.dumps(base, option=orjson.OPT_SERIALIZE_NUMPY) if draw(st.booleans()) else None
    if text is None:
        try:
            text = orjson.dumps(base)
        except TypeError:
            text = b"{}"
    return text


@st.composite
def batches(draw: st.DrawFn) -> list[bytes]:
    """Messages, some of them JSON arrays of several messages (the producer-side batch form)."""
    values = draw(st.lists(messages(), min_size=1, max_size=6))
    out: list[bytes] = []
    while values:
        take = draw(st.integers(0, 3))
        if take == 0:
            out.append(values.pop(0))
        else:
            group, values = values[:take], values[take:]
            out.append(b"[" + b",".join(group) + b"]")
    if draw(st.booleans()):
        out.insert(draw(st.integers(0, len(out))), b"[]")
    return out


@settings(max_examples=400, deadline=None)
@given(batches())
def test_fast_path_never_disagrees_with_the_exact_path(values: list[bytes]) -> None:
    fast = decode_batch(values)
    exact = _slow_decode(values, list(range(len(values))))
    if fast.fast:
        assert not exact.rejected
        assert fast.rows.equals(exact.rows)
    else:
        assert fast.rows.equals(exact.rows)
        assert [(i, r.reason) for i, r in fast.rejected] == [
            (i, r.reason) for i, r in exact.rejected
        ]


def test_random_garbage_never_raises() -> None:
    rng = random.Random(5)
    values = [bytes(rng.randrange(256) for _ in range(rng.randrange(0, 40))) for _ in range(300)]
    decoded = decode_batch(values)
    assert decoded.rows.height == 0
    assert len(decoded.rejected) == 300


_units = st.integers(0, 10**30)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(_units, _units, st.integers(1, 10**22), _units, _units), min_size=1, max_size=20
    )
)
def test_vectorized_bar_output_equals_python_integers(
    rows: list[tuple[int, int, int, int, int]],
) -> None:
    """bar_frame (Polars strings) == format_scaled/divide_rounded per bar, incl. rounding ties."""
    frame = pl.DataFrame(
        [
            {"venue": "x", "symbol": "S", "start_ms": T0, "open_ts": T0, "open": p + 1, "open_id": "1",
             "close_ts": T0, "close": p, "close_id": "2", "high": h, "low": 1, "volume": vol,
             "quote": q if q % 3 else vol * (q % 10**14) + vol // 2, "trades": 1, "buy_volume": bv, "buy_quote": bq}
            for (p, q, vol, bv, bq), h in zip(rows, [10**22 - 1, 1] * len(rows), strict=False)
        ],
        schema=BAR_SCHEMA,
    )  # fmt: skip
    assert bar_frame(frame, "5m").to_dicts() == _records_slow(frame, "5m")
