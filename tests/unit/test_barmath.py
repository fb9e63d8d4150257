"""The bar kernel against independent computations: a plain-Decimal reference (tests/reference.py)
under random batchings, DuckDB SQL on the real BTCUSDT capture; and its guards — implausible
event times, duplicates, the per-minute cap — against the clean run of the same log."""

from __future__ import annotations

import itertools
from functools import cache

import duckdb
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewax.codec import (
    DECIMALS,
    INTERVALS,
    Bar,
    Gap,
    Heartbeat,
    ParseError,
    Since,
    Trade,
    divide_rounded,
    format_scaled,
)
from candlewax.codec.columns import bar_columns, decode_batch
from connectors.replay import iter_file
from flows import barmath
from flows.barmath import BAR_SCHEMA, BarState, EmptyIntervals, StepResult, TimeRules
from tests.conftest import BTCUSDT_GZ
from tests.reference import (
    DECIMAL_FIELDS,
    as_decimals,
    reference_bars,
    reference_flags,
    reference_flat_bars,
)

T0 = 1_723_161_240_000  # 2024-08-08 23:54:00 UTC
SKIP = EmptyIntervals("skip")


@cache
def btcusdt() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)


def to_records(bars: pl.DataFrame, interval: str) -> list[dict[str, object]]:
    return bar_columns(bars, interval).to_dicts() if bars.height else []


def run_steps(
    values: list[bytes], cuts: list[int], state: BarState, final: bool = True
) -> list[StepResult]:
    """Feed ``values`` (offsets 0..n-1) cut at ``cuts``; the results of every step."""
    results = []
    edges = [0, *sorted(c for c in set(cuts) if 0 < c < len(values)), len(values)]
    for lo, hi in itertools.pairwise(edges):
        if lo < hi:
            decoded = decode_batch(values[lo:hi], list(range(lo, hi)))
            results.append(state.step(decoded.rows, decoded.markers))
    if final:
        results.append(state.flush())
    return results


def bars_of(results: list[StepResult]) -> dict[str, list[dict[str, object]]]:
    bars: dict[str, list[dict[str, object]]] = {k: [] for k in INTERVALS}
    for result in results:
        for name, frame in result.closed.items():
            bars[name] += to_records(frame, name)
    return bars


def run_kernel(
    values: list[bytes],
    cuts: list[int],
    lateness_ms: int = 2_000,
    final: bool = True,
    rules: TimeRules | None = None,
    empty: EmptyIntervals = SKIP,
) -> tuple[dict[str, list[dict[str, object]]], int]:
    """Feed ``values`` cut at ``cuts``; return bars per interval (wire format) and late count.
    ``empty``: these tests are about the bars of trades, so no flat bars unless asked."""
    state = BarState(lateness_ms=lateness_ms, time_rules=rules or TimeRules(), empty=empty)
    results = run_steps(values, cuts, state, final)
    return bars_of(results), sum(r.late.height for r in results)


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
    trades = btcusdt()[:1500] if batch == 1 else btcusdt()[:5000] if batch == 13 else btcusdt()
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
    # Nothing late, and no limit on time jumps: without its heartbeats the log may step further
    # than max_time_jump_ms, and this test is about rollups, not the event clock.
    free = TimeRules(max_jump_ms=10**12)
    bars, _ = run_kernel([t.encode() for t in trades], cuts, lateness_ms=10**9, rules=free)
    for name in ("5m", "15m", "30m", "1h"):
        assert normalized(bars[name]) == normalized(reference_bars(trades, name))


# --------------------------------------------------------------------------- time


#: These tests are about windows, not the event clock: a single message is its own quorum.
ALONE = TimeRules(quorum=1)


def test_windows_close_on_watermark_and_heartbeats_close_idle_symbols() -> None:
    state = BarState(lateness_ms=2_000, time_rules=ALONE, empty=SKIP)
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
    state = BarState(lateness_ms=2_000, time_rules=ALONE, empty=SKIP)
    result = state.step(decode_batch([first.encode(), later.encode(), late.encode()]).rows)
    assert result.late["id"].to_list() == ["3"]
    (bar,) = to_records(result.closed["1m"], "1m")
    assert (bar["high"], bar["trades"]) == ("100.00000000", 1)


# --------------------------------------------------------------------------- event time

FUTURE = 4_070_908_800_000  # 2099-01-01: under the 2100 limit, far ahead of any real clock


def clean_log() -> list[bytes]:
    """The real capture with heartbeats, as a connector writes it."""
    values: list[bytes] = []
    beat = None
    for trade in btcusdt()[:3000]:
        values.append(trade.encode())
        if beat is None or trade.ts_ms >= beat + 1000:
            beat = trade.ts_ms
            values.append(Heartbeat("binance", beat).encode())
    return values


def outcome(values: list[bytes], cuts: list[int], **rules: int) -> tuple[dict, list, int, int]:
    """Bars, the offsets of implausible rows, the late and the duplicate counts."""
    results = run_steps(values, cuts, BarState(time_rules=TimeRules(**rules), empty=SKIP))
    held = sorted(row.row["off"] for r in results for row in r.implausible)
    late = sum(r.late.height for r in results)
    dupes = sum(r.duplicates.height for r in results)
    return bars_of(results), held, late, dupes


@pytest.mark.parametrize("kind", ["trade", "heartbeat"])
@pytest.mark.parametrize("at", [0, 1, 10, 2999])
def test_a_far_future_record_moves_nothing(kind: str, at: int) -> None:
    """One record dated 2099 anywhere in the stream — first, early, last: it is the one row
    reported implausible, no real trade is late, and every bar equals the clean run's."""
    clean = clean_log()
    want, _, want_late, _ = outcome(clean, [])
    bogus = (
        Trade("binance", "BTCUSDT", "1", "61000.5", "1", "buy", FUTURE, None).encode()
        if kind == "trade"
        else Heartbeat("binance", FUTURE).encode()
    )
    values = [*clean[:at], bogus, *clean[at:]]
    got, held, late, _ = outcome(values, cuts=[5, 500, 1700])
    assert held == [at]
    assert late == want_late == 0
    assert got == want
    assert not any(b["start_ms"] >= FUTURE - 3_600_000 for bars in got.values() for b in bars)


def test_a_trade_far_ahead_of_its_receive_clock_is_implausible_at_once() -> None:
    trades = list(btcusdt()[:200])
    assert all(t.recv_ms is not None and t.ts_ms - t.recv_ms < 2_000 for t in trades)
    skewed = Trade("binance", "BTCUSDT", "7", "61000", "1", "buy", trades[50].recv_ms + 90_000,
                   trades[50].recv_ms)  # fmt: skip
    values = [t.encode() for t in trades]
    values.insert(100, skewed.encode())
    got, held, late, _ = outcome(values, [], max_skew_ms=60_000)
    assert held == [100] and late == 0
    assert got == outcome([t.encode() for t in trades], [])[0]


def test_a_real_gap_is_followed_once_corroborated() -> None:
    """The feed is back after 10 minutes: the first records after the gap are held until three
    messages agree, then used — nothing is lost or late."""
    trades = list(btcusdt()[:1000])
    gap = 600_000
    after = [Trade(t.venue, t.symbol, f"g{t.id}", t.price, t.qty, t.side, t.ts_ms + gap, None)
             for t in trades[500:]]  # fmt: skip
    log = trades[:500] + after
    got, held, late, _ = outcome([t.encode() for t in log], cuts=[501, 502, 777])
    assert held == [] and late == 0
    for name in INTERVALS:
        assert normalized(got[name]) == normalized(reference_bars(log, name)), name


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_time_guard_keeps_real_records_and_drops_only_the_injected_ones(
    data: st.DataObject,
) -> None:
    """Random logs of real records (steps within max_time_jump_ms, a long gap now and then)
    with single far-future records injected at least ``quorum`` messages apart: exactly the
    injected ones are implausible, the bars equal the reference over the real trades, and none
    of it depends on the batching."""
    log, _cuts, lateness = data.draw(trade_logs())
    real = [r for r in log]
    values = [r.encode() for r in real]
    spots = sorted(data.draw(st.sets(st.integers(0, len(values)), max_size=3)))
    spots = [s for i, s in enumerate(spots) if i == 0 or s - spots[i - 1] >= 4]
    injected = []
    for shift, spot in enumerate(spots):
        bogus = Heartbeat("x", FUTURE + shift) if data.draw(st.booleans()) else Trade(
            "x", "BTCUSDT", f"bogus{shift}", "1", "1", None, FUTURE + shift)  # fmt: skip
        values.insert(spot + shift, bogus.encode())
        injected.append(spot + shift)
    cuts = data.draw(st.lists(st.integers(0, len(values)), max_size=6))
    results = run_steps(values, cuts, BarState(lateness_ms=lateness, empty=SKIP))
    held = sorted(row.row["off"] for r in results for row in r.implausible)
    if len([v for v in values if v not in {values[i] for i in injected}]) >= 3 or not injected:
        assert held == injected
    kept, want_late = replay_with_lateness(real, lateness)
    if held == injected:
        assert sum(r.late.height for r in results) == want_late
        bars = bars_of(results)
        for name in INTERVALS:
            assert normalized(bars[name]) == normalized(reference_bars(kept, name)), name
    again = run_steps(values, [], BarState(lateness_ms=lateness, empty=SKIP))
    for name in INTERVALS:  # the same bars; only their order may follow the batch boundaries
        assert normalized(bars_of(again)[name]) == normalized(bars_of(results)[name])
    assert sorted(row.row["off"] for r in again for row in r.implausible) == held


# --------------------------------------------------------------------------- duplicates


@pytest.mark.parametrize("how", ["each_twice", "batch_replayed", "every_third_in_arrays"])
def test_duplicates_leave_the_bars_of_a_clean_run(how: str) -> None:
    clean = [t.encode() for t in btcusdt()[:3000]]
    if how == "each_twice":
        values = [v for v in clean for _ in (0, 1)]
    elif how == "batch_replayed":  # a producer retried a whole batch of 400 messages
        values = [*clean[:1400], *clean[1000:1400], *clean[1400:]]
    else:
        values = clean + [b"[" + b",".join(clean[i : i + 3]) + b"]" for i in range(0, 900, 9)]
        values = sorted(values, key=lambda v: orjson.loads(v)[-1]["ts_ms"]
                        if v[:1] == b"[" else orjson.loads(v)["ts_ms"])  # fmt: skip
    want, _, want_late, _ = outcome(clean, [])
    got, held, late, dupes = outcome(values, cuts=list(range(0, len(values), 777)))
    assert got == want and held == [] and late == want_late
    expected = {"each_twice": 3000, "batch_replayed": 400, "every_third_in_arrays": 300}[how]
    assert dupes == expected


def test_duplicate_state_is_released_when_windows_close() -> None:
    state = BarState(empty=SKIP)
    run_steps([t.encode() for t in btcusdt()], [1000, 5000], state, final=False)
    assert len(state.seen.windows) <= 2  # the minute in progress (and the one within lateness)
    assert 0 < len(state.seen) <= len(btcusdt())
    state.flush()
    assert len(state.seen) == 0 and not state.seen.windows and not state.seen._hashes


def test_a_minute_takes_at_most_max_minute_trades(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(barmath, "MAX_MINUTE_TRADES", 5)
    trades = [Trade("binance", "BTCUSDT", str(i), "100", "1", "buy", T0 + i) for i in range(8)]
    other = Trade("binance", "ETHUSDT", "1", "10", "1", "sell", T0 + 9)
    results = run_steps(
        [t.encode() for t in [*trades, other]], [3], BarState(time_rules=ALONE, empty=SKIP)
    )
    assert [r["id"] for res in results for r in res.too_many.iter_rows(named=True)] == [
        "5",
        "6",
        "7",
    ]
    bars = {b["symbol"]: b["trades"] for b in bars_of(results)["1m"]}
    assert bars == {"BTCUSDT": 5, "ETHUSDT": 1}


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
    ).with_columns(complete=pl.Series([i % 2 == 0 for i in range(len(rows))]),
                   gaps=pl.Series([i % 2 for i in range(len(rows))], dtype=pl.UInt32))  # fmt: skip
    assert bar_columns(frame, "5m").to_dicts() == python_bars(frame, "5m")


def python_bars(bars: pl.DataFrame, interval: str) -> list[dict[str, object]]:
    """The wire format with Python integers, one bar at a time: the reference for the
    vectorized output."""
    length = INTERVALS[interval]
    out: list[dict[str, object]] = []
    for row in bars.iter_rows(named=True):
        volume, quote = row["volume"], row["quote"]
        out.append(
            {
                "v": 1,
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
                "complete": row["complete"],
                "gaps": row["gaps"],
            }
        )
    return out


def test_counted_trades_are_remembered_across_a_snapshot() -> None:
    """Bytewax snapshots a partition's state by pickling it; after a restart from the snapshot,
    a copy of a trade counted before it is still a duplicate."""
    import pickle

    trades = [t.encode() for t in btcusdt()[:2000]]
    state = BarState(empty=SKIP)
    first = run_steps(trades[:1500], [], state, final=False)
    restored = pickle.loads(pickle.dumps(state))  # what a snapshot and a restart do
    rest = run_steps(trades[1400:], [], restored)  # 100 copies, then the rest
    assert sum(r.duplicates.height for r in rest) == 100
    want, _ = run_kernel(trades, cuts=[1500])
    for name in INTERVALS:
        assert normalized(bars_of(first + rest)[name]) == normalized(want[name]), name


# --------------------------------------------------------------------------- empty windows


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    thin=st.lists(st.integers(0, 7_199_999), min_size=1, max_size=12),
    cut_every=st.integers(25, 400),
)
def test_empty_windows_are_flat_bars_as_binance_makes_them(thin: list[int], cut_every: int) -> None:
    """A busy symbol moves time; a sparse one trades at a few random moments of two hours; a
    third, set to ``skip``, too. Every interval equals an independent computation: flat bars
    from each symbol's first bar to the end of input, at the previous close — so a rollup over
    flat minutes equals the bar built directly from the trades."""
    trades = [Trade("binance", "BUSY", f"b{i}", "100.00000000", "1.00000000", "buy", T0 + i * 7_000)
              for i in range(7_200_000 // 7_000)]  # fmt: skip
    for n, dt in enumerate(sorted(thin)):
        price = f"{200 + n % 7}.{n:08d}"
        trades.append(Trade("binance", "THIN", f"t{n}", price, "0.50000000", "sell", T0 + dt))
        trades.append(Trade("binance", "QUIET", f"q{n}", price, "0.25000000", None, T0 + dt))
    trades.sort(key=lambda t: t.ts_ms)  # log order = time order: nothing late
    rule = EmptyIntervals("flat", symbols=(("binance:QUIET", "skip"),))
    values = [t.encode() for t in trades]
    bars, late = run_kernel(values, list(range(0, len(values), cut_every)), empty=rule)
    assert late == 0
    newest = max(t.ts_ms for t in trades)
    for name, length in INTERVALS.items():
        horizon = newest - newest % length + length  # end of input closes the newest window
        want = reference_flat_bars(trades, name, horizon, skip=frozenset({"binance:QUIET"}))
        assert normalized(bars[name]) == normalized(want), name
    flat = [b for b in bars["1m"] if b["trades"] == 0]
    assert all(b["symbol"] == "THIN" and b["first_id"] is None for b in flat)
    for bar in bars["1m"]:  # every bar, flat ones included, is a valid `bars` message
        assert Bar.decode(orjson.dumps(bar)).to_dict() == bar


def test_flat_bars_come_from_the_watermark_not_from_the_batches() -> None:
    """Time moves on heartbeat-free trades of another symbol: the sparse symbol's flat minutes
    close as the watermark passes them, one step at a time, never twice."""
    state = BarState(lateness_ms=0, time_rules=ALONE)
    first = Trade("binance", "THIN", "1", "5.00000000", "1.00000000", "buy", T0 + 10_000)
    busy = [Trade("binance", "BUSY", str(i), "1.00000000", "1.00000000", "buy", T0 + i * 60_000 + 30_000)
            for i in range(1, 6)]  # fmt: skip
    seen: list[int] = []
    for trade in [first, *busy]:
        result = state.step(decode_batch([trade.encode()], [0]).rows)
        seen += [s for s in to_records(result.closed.get("1m", barmath.empty_bars()), "1m")
                 if s["symbol"] == "THIN" and s["trades"] == 0]  # type: ignore[misc]  # fmt: skip
    starts = [b["start_ms"] for b in seen]  # type: ignore[index]
    assert starts == [T0 + 60_000 * k for k in range(1, 5)]  # minutes 1-4, each once, in order
    assert {b["close"] for b in seen} == {"5.00000000"}  # type: ignore[index]


def test_a_dormant_symbol_stops_getting_flat_bars_until_its_next_trade() -> None:
    gap = barmath.FLAT_MAX_GAP_MS
    trades = [
        Trade("binance", "THIN", "1", "5.00000000", "1.00000000", "buy", T0),
        Trade("binance", "THIN", "2", "6.00000000", "1.00000000", "buy", T0 + gap + 3 * 3_600_000),
    ]
    rules = TimeRules(max_jump_ms=10**12)
    bars, _ = run_kernel([t.encode() for t in trades], [1], rules=rules,
                         empty=EmptyIntervals())  # fmt: skip
    flat = [b for b in bars["1h"] if b["trades"] == 0]
    assert len(flat) == gap // 3_600_000 - 1  # a day after its first hour, then nothing
    assert [b["trades"] for b in bars["1h"]][-1] == 1


def test_bars_of_no_trade_are_checked_like_any_bar() -> None:
    flat = {"v": 1, "venue": "binance", "symbol": "THIN", "interval": "1m", "start_ms": T0,
            "end_ms": T0 + 60_000, "open": "5.0", "high": "5.0", "low": "5.0", "close": "5.0",
            "volume": "0", "quote_volume": "0", "vwap": "5.0", "trades": 0, "buy_volume": "0",
            "buy_quote_volume": "0", "first_id": None, "last_id": None, "complete": True,
            "gaps": 0}  # fmt: skip
    assert Bar.from_dict(flat).first_id is None
    for change, reason in [
        ({"complete": 1}, "bad_type"),
        ({"gaps": -1}, "out_of_range"),
        ({"gaps": 1}, "out_of_range"),  # a bar over a gap is not complete
        ({"gaps": True, "complete": False}, "bad_type"),
        ({"high": "5.1"}, "out_of_range"),
        ({"volume": "0.1"}, "out_of_range"),
        ({"first_id": "7"}, "bad_name"),
        ({"trades": 1}, "out_of_range"),  # a traded bar has volume (and ids)
        ({"trades": -1}, "out_of_range"),
    ]:
        with pytest.raises(ParseError) as err:
            Bar.from_dict({**flat, **change})
        assert err.value.reason == reason, change


# --------------------------------------------------------------------------- flags


def _flags(bars: dict[str, list[dict[str, object]]], name: str) -> dict[tuple, tuple[bool, int]]:
    return {
        (b["venue"], b["symbol"], b["start_ms"]): (b["complete"], b["gaps"]) for b in bars[name]
    }


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    thin=st.lists(st.integers(0, 7_199_999), min_size=1, max_size=8),
    since=st.none() | st.tuples(st.integers(0, 1027), st.integers(-300_000, 300_000)),
    gaps=st.lists(
        st.tuples(st.integers(0, 1027), st.integers(-400_000, 400_000), st.integers(0, 900_000)),
        max_size=4,
    ),
    cut_every=st.integers(60, 400),
)
def test_flags_equal_an_independent_computation(
    thin: list[int],
    since: tuple[int, int] | None,
    gaps: list[tuple[int, int, int]],
    cut_every: int,
) -> None:
    """``complete`` and ``gaps`` of every bar of every interval, flat ones included, with a
    Since marker and gap markers at random places of the log (a gap's range random around the
    time it arrives), cut into random batches, equal a plain computation from the definitions."""
    busy = [Trade("binance", "BUSY", f"b{i}", "100.00000000", "1.00000000", "buy", T0 + i * 7_000)
            for i in range(7_200_000 // 7_000)]  # fmt: skip
    timed: list[tuple[int, int, Trade | Since | Gap]] = [(t.ts_ms, 1, t) for t in busy]
    for n, dt in enumerate(sorted(thin)):
        trade = Trade("binance", "THIN", f"t{n}", f"{200 + n}.5", "0.50000000", "sell", T0 + dt)
        timed.append((trade.ts_ms, 1, trade))
    if since is not None:  # placed after the busy trade at that index, claiming a time near it
        at = busy[since[0]].ts_ms
        timed.append((at, 2, Since("binance", "THIN", max(T0, at + since[1]))))
    for k, (index, shift, width) in enumerate(gaps):
        at = busy[index].ts_ms
        lo = max(T0, at + shift)
        symbol = "THIN" if k % 2 == 0 else "BUSY"
        timed.append((at, 2, Gap("binance", symbol, lo, lo + width)))
    records = [r for _, _, r in sorted(timed, key=lambda x: (x[0], x[1]))]
    values = [r.encode() for r in records]
    bars, late = run_kernel(values, list(range(0, len(values), cut_every)), empty=EmptyIntervals())
    assert late == 0
    for name in INTERVALS:
        ours = _flags(bars, name)
        assert ours == reference_flags(records, ours, name, 2_000), name


def test_flags_of_the_real_capture_mark_the_first_partial_windows_and_a_fill() -> None:
    """The capture starts at 23:54:13: its first bar of every interval holds part of its trades
    and says so; every later bar is complete. A Since marker at the day's start (a start-up
    fill of the day) makes them complete, one at 23:00 all but the day, one at 23:54:30 leaves
    the 23:54 minute partial."""
    trades = btcusdt()[:20_000]
    values = [t.encode() for t in trades]
    plain, _ = run_kernel(values, [7_000])
    first = trades[0].ts_ms
    for name, length in INTERVALS.items():
        flags = [b["complete"] for b in plain[name]]
        assert flags[0] is False and all(flags[1:]), name
        assert plain[name][0]["start_ms"] == first - first % length  # type: ignore[operator]
    hour, day = first - first % 3_600_000, first - first % 86_400_000
    filled, _ = run_kernel([Since("binance", "BTCUSDT", day).encode(), *values], [3, 9_000])
    assert all(b["complete"] for name in INTERVALS for b in filled[name])
    # A fill of the hour (as a connector whose longest interval is 1h makes): not the day.
    hourly, _ = run_kernel([Since("binance", "BTCUSDT", hour).encode(), *values], [])
    assert all(b["complete"] for name in INTERVALS if name != "1d" for b in hourly[name])
    assert [b["complete"] for b in hourly["1d"]] == [False, True]  # the capture ends at 00:00:01
    late_fill = Since("binance", "BTCUSDT", first - first % 60_000 + 30_000)
    later, _ = run_kernel([late_fill.encode(), *values], [])
    assert [b["complete"] for b in later["1m"]][:2] == [False, True]
    assert later["1h"][0]["complete"] is False
    # A trade before the marker in the log wins: coverage starts at the trade.
    after, _ = run_kernel([values[0], Since("binance", "BTCUSDT", hour).encode(), *values[1:]], [])
    assert [b["complete"] for b in after["1m"]][:2] == [False, True]


def test_a_gap_marker_flags_the_open_windows_it_overlaps_and_not_the_closed_ones() -> None:
    """A gap learnt at 23:58:xx reaching back three minutes: the 1m windows it overlaps that
    were still open count it; those already closed (published) do not; 5m and 1h do."""
    trades = btcusdt()
    values = [t.encode() for t in trades]
    at = 7_000
    now = trades[at].ts_ms
    gap = Gap("binance", "BTCUSDT", now - 180_000, now)
    records = [*trades[:at], gap, *trades[at:]]
    bars, _ = run_kernel([*values[:at], gap.encode(), *values[at:]], [at - 5, at + 1])
    for name in INTERVALS:
        ours = _flags(bars, name)
        assert ours == reference_flags(records, ours, name, 2_000), name
    overlapping = [b for b in bars["1m"] if b["start_ms"] + 60_000 > now - 180_000
                   and b["start_ms"] < now]  # type: ignore[operator]  # fmt: skip
    assert overlapping[0]["gaps"] == 0  # closed before the marker came
    assert overlapping[-1]["gaps"] == 1  # still open
    assert all(not b["complete"] for b in bars["1m"] if b["gaps"])
    assert bars["5m"][1]["gaps"] == 1 and bars["1h"][0]["gaps"] == 1
    for bar in bars["1m"]:  # a flagged bar is a valid `bars` message
        assert Bar.decode(orjson.dumps(bar)).to_dict() == bar


def test_a_restarted_connector_s_refill_is_counted_not_dead_lettered() -> None:
    """A connector restarted at 23:58:30 re-publishes its hour (a Since marker, then every
    trade from 23:00): copies in open windows are duplicates, those of closed windows are
    refills — counted, no `late` dead letter — and the bars are those of one run. A late trade
    before the marker, or one older than the marker's time, stays late."""
    trades = btcusdt()
    values = [t.encode() for t in trades]
    cut = next(i for i, t in enumerate(trades) if t.ts_ms >= T0 + 270_000)
    hour = trades[0].ts_ms - trades[0].ts_ms % 3_600_000
    stray = Trade("binance", "BTCUSDT", "stray", "61000.0", "0.1", None, trades[0].ts_ms)
    log = [*values[:cut], stray.encode(), Since("binance", "BTCUSDT", hour).encode(),
           *values[:cut], *values[cut:]]  # fmt: skip
    state = BarState()
    results = run_steps(log, [cut + 7, cut + 900], state)
    refilled = sum(r.refilled.height for r in results)
    late = [row["id"] for r in results for row in r.late.iter_rows(named=True)]
    duplicates = sum(r.duplicates.height for r in results)
    assert late == ["stray"]  # before the marker: a late trade like any
    assert refilled + duplicates == cut and refilled > 0 and duplicates > 0
    once, _ = run_kernel(values, [cut])
    assert {k: normalized(v) for k, v in bars_of(results).items()} == {
        k: normalized(v) for k, v in once.items()
    }


@settings(max_examples=60, deadline=None)
@given(
    since=st.lists(st.one_of(st.none(), st.integers(-400_000, 400_000)), min_size=3, max_size=3),
    gap=st.booleans(),
    length=st.sampled_from([60_000, 300_000, 900_000]),
)
def test_all_complete_never_says_complete_where_a_window_is_not(
    since: list[int | None], gap: bool, length: int
) -> None:
    """The range detector skips the per-row flags when ``all_complete`` says so: it may answer
    False too often (the per-row check then runs), never True where a row's window, of that
    length or shorter, is incomplete."""
    names = ["AUSDT", "BUSDT", "CUSDT"]
    base = T0 + 3_600_000
    markers = [
        Since("binance", name, base + offset).encode()
        for name, offset in zip(names, since, strict=True)
        if offset is not None
    ]
    if gap:
        markers.append(Gap("binance", "BUSDT", base - 30_000, base - 10_000).encode())
    bars = BarState()
    first = decode_batch([*markers])  # type: ignore[list-item]
    bars.step(first.rows, first.markers)
    trades = [
        Trade("binance", name, str(i), "10", "1", None, base + 20_000 * i, None).encode()
        for i, name in enumerate(names * 3)
    ]
    rows = bars.step(decode_batch(trades).rows).on_time  # type: ignore[arg-type]
    if bars.all_complete(rows, length):
        for shorter in (60_000, 300_000, 900_000):
            if shorter <= length:
                assert not bars.incomplete_windows(rows, shorter).any()
