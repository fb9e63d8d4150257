"""The synthetic market: determinism, validity of every trade, and the statistics it promises."""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal

import numpy as np
import orjson
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewax.codec import Trade, decode_message, decode_record, encode_trades
from candlewax.errors import ConfigError
from connectors.synthetic import DEFAULT_START_MS, SyntheticMarket

N_REFERENCE = 30_000


def flat(chunks) -> list:
    return [item for chunk in chunks for item in chunk]


def market(**kwargs) -> SyntheticMarket:
    return SyntheticMarket(20, seed=5, **kwargs)


@pytest.fixture(scope="module")
def reference() -> list[Trade]:
    """The first trades of ``market()``, generated in one chunk."""
    return flat(market().batches(N_REFERENCE, batch_size=N_REFERENCE))


@pytest.fixture(scope="module")
def reference_values(reference: list[Trade]) -> list[bytes]:
    return [trade.encode() for trade in reference]


def frame(trades: list[Trade]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "symbol": [t.symbol for t in trades],
            "id": [int(t.id) for t in trades],
            "price": [float(t.price) for t in trades],
            "side": [t.side for t in trades],
            "ts": [t.ts_ms for t in trades],
        }
    )


# --------------------------------------------------------------------------- determinism


def test_same_trades_whatever_the_chunking(reference: list[Trade]) -> None:
    small = flat(market().batches(N_REFERENCE, batch_size=997))
    assert small == reference
    m = market()
    pieces = flat(m.batches(1)) + flat(m.batches(12_345, batch_size=5_000))
    pieces += flat(m.batches(N_REFERENCE - len(pieces), batch_size=70_000))
    assert pieces == reference
    assert m.trades_emitted == N_REFERENCE


def test_until_ms_cuts_do_not_change_the_stream(reference: list[Trade]) -> None:
    m = market()
    trades: list[Trade] = []
    cut = m.start_ms
    while len(trades) < N_REFERENCE:
        cut += 7_001
        trades += flat(m.batches(until_ms=cut, batch_size=333))
        assert all(t.ts_ms < cut for t in trades)
        assert m.clock_ms == cut
    assert trades[:N_REFERENCE] == reference


def test_batches_and_encoded_share_one_stream(reference_values: list[bytes]) -> None:
    m = market()
    values = [t.encode() for t in flat(m.batches(1_000))]
    values += [value for _, value, _ in flat(m.encoded(N_REFERENCE - 1_000, batch_size=4_096))]
    assert values == reference_values


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.integers(1, 3_000), min_size=1, max_size=5), st.integers(1, 2_500))
def test_encoded_chunking_property(
    reference_values: list[bytes], sizes: list[int], batch_size: int
) -> None:
    m = market()
    values = []
    for size in sizes:
        values += [value for _, value, _ in flat(m.encoded(size, batch_size=batch_size))]
    assert values == reference_values[: sum(sizes)]


def test_seed_and_arguments_matter(reference: list[Trade]) -> None:
    other_seed = flat(SyntheticMarket(20, seed=6).batches(1_000))
    assert [t.encode() for t in other_seed] != [t.encode() for t in reference[:1_000]]
    again = flat(SyntheticMarket(20, seed=5).batches(1_000))
    assert again == reference[:1_000]


# --------------------------------------------------------------------------- validity


def test_every_trade_is_valid_and_round_trips(reference: list[Trade]) -> None:
    for trade in reference:
        assert decode_record(orjson.loads(trade.encode())) == trade
        assert trade.venue == "synthetic"
        assert trade.recv_ms is None
        assert trade.side in ("buy", "sell")


def test_prices_and_quantities_are_exact_multiples(reference: list[Trade]) -> None:
    instruments = {i.symbol: i for i in market().instruments}
    for trade in reference:
        instrument = instruments[trade.symbol]
        price, qty = Decimal(trade.price), Decimal(trade.qty)
        tick, lot = Decimal(instrument.tick_size), Decimal(instrument.lot_size)
        assert price > 0 and qty > 0
        assert price % tick == 0 and qty % lot == 0
        # Written with exactly the tick's (lot's) decimals, never more than 8.
        assert -price.as_tuple().exponent == -tick.as_tuple().exponent <= 8
        assert -qty.as_tuple().exponent == -lot.as_tuple().exponent <= 8


def test_ids_increase_per_symbol_and_time_never_goes_back(reference: list[Trade]) -> None:
    df = frame(reference)
    ts = df["ts"].to_numpy()
    assert (np.diff(ts) >= 0).all()
    assert ts[0] >= DEFAULT_START_MS
    assert (np.diff(ts) == 0).any(), "several trades may share a millisecond"
    steps = df.group_by("symbol").agg(pl.col("id").diff().drop_nulls().alias("step"))
    assert (steps.explode("step")["step"] == 1).all()


def test_clock_and_heartbeat() -> None:
    m = market()
    assert m.clock_ms == m.start_ms
    first = flat(m.batches(500))
    assert m.clock_ms == first[-1].ts_ms
    until = m.clock_ms + 30_000
    rest = flat(m.batches(until_ms=until))
    assert rest and rest[-1].ts_ms < until == m.clock_ms
    assert m.heartbeat().ts_ms == until
    after = flat(m.batches(10))
    assert after[0].ts_ms >= until
    assert flat(m.batches(until_ms=until)) == []  # already there: nothing, clock unchanged
    assert m.clock_ms == after[-1].ts_ms


def test_endless_stream() -> None:
    stream = market().batches(batch_size=2_000)
    chunks = [next(stream) for _ in range(40)]  # 80,000 trades: more than one internal step
    assert all(len(chunk) == 2_000 for chunk in chunks)
    ts = [t.ts_ms for t in flat(chunks)]
    assert ts == sorted(ts)


def test_symbol_names_and_instruments() -> None:
    m = SyntheticMarket(30)
    assert m.symbols[:4] == ("BTCUSDT", "ETHUSDT", "SOLUSDT", "BNBUSDT")
    assert m.symbols[-1] == "SYM0029USDT"
    btc = m.instruments[0]
    assert (btc.start_price, btc.tick_size, btc.lot_size) == ("42000.00", "0.01", "0.00001")
    assert math.isclose(sum(i.weight for i in m.instruments), 1.0)
    named = SyntheticMarket(["eth-usdt", "pepe_usdt"], venue="Sim")
    assert named.symbols == ("ETHUSDT", "PEPEUSDT")
    assert named.instruments[0].tick_size == "0.01"
    trade = next(named.batches(1))[0]
    assert trade.venue == "sim" and trade.key in ("sim:ETHUSDT", "sim:PEPEUSDT")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"symbols": 0},
        {"symbols": []},
        {"symbols": "BTCUSDT"},
        {"symbols": ["BTCUSDT", "btc-usdt"]},
        {"symbols": ["BTC USDT?"]},
        {"venue": "Bad Venue!"},
        {"seed": -1},
        {"start_ms": 1_704_067_200},  # seconds
        {"trades_per_second": 0},
        {"trades_per_second": math.inf},
        {"burst_every_s": 0},
        {"burst_multiplier": 0},
    ],
)
def test_invalid_arguments(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        SyntheticMarket(**kwargs)


def test_invalid_call_arguments_fail_at_the_call() -> None:
    m = market()
    with pytest.raises(ConfigError):
        m.batches(10, batch_size=0)
    with pytest.raises(ConfigError):
        m.encoded(-1)
    with pytest.raises(ConfigError):
        m.encoded(10, per_message=0)


# --------------------------------------------------------------------------- statistics


def test_side_follows_the_price_move(reference: list[Trade]) -> None:
    df = frame(reference).with_columns(
        pl.col("price").diff().over("symbol").alias("move"), (pl.col("side") == "buy").alias("buy")
    )
    assert 0.45 < df["buy"].mean() < 0.55
    up = df.filter(pl.col("move") > 0)["buy"].mean()
    down = df.filter(pl.col("move") < 0)["buy"].mean()
    assert up > 0.65 and down < 0.35


def test_activity_is_zipf_like() -> None:
    m = SyntheticMarket(50, seed=3)
    counts = Counter(key for key, _, _ in flat(m.encoded(100_000)))
    ranked = counts.most_common()
    assert ranked[0][0] == b"synthetic:BTCUSDT"
    median = sorted(counts.values())[len(counts) // 2]
    assert ranked[0][1] > 10 * median
    assert ranked[0][1] / 100_000 == pytest.approx(m.instruments[0].weight, rel=0.05)


def test_bursts_raise_realized_volatility() -> None:
    hours = 4
    m = SyntheticMarket(3, seed=11, trades_per_second=10.0, burst_every_s=240.0)
    end = m.start_ms + hours * 3_600_000
    trades = flat(m.batches(until_ms=end))
    bursts = m.bursts(end)
    assert len(bursts) > 20
    starts = np.array([s for s, _ in bursts])
    stops = np.array([e for _, e in bursts])
    assert (starts[1:] > stops[:-1]).all() and (stops > starts).all()

    closes = (
        frame(trades)
        .with_columns((pl.col("ts") // 60_000 * 60_000).alias("minute"))
        .group_by("symbol", "minute")
        .agg(pl.col("price").last().alias("close"))
        .sort("symbol", "minute")
        .with_columns(pl.col("close").log().diff().over("symbol").alias("r"))
        .drop_nulls("r")
    )
    minute = closes["minute"].to_numpy()
    # A 1m return is "during a burst" when its minute overlaps one (else the market was calm).
    last_start = np.searchsorted(starts, minute + 60_000, side="left") - 1
    in_burst = (last_start >= 0) & (stops[np.maximum(last_start, 0)] > minute)
    vol = (
        closes.with_columns(pl.Series("burst", in_burst))
        .group_by("symbol", "burst")
        .agg(pl.col("r").std().alias("vol"), pl.len().alias("n"))
    )
    for symbol in m.symbols:
        calm = vol.filter(symbol=symbol, burst=False).row(0, named=True)
        wild = vol.filter(symbol=symbol, burst=True).row(0, named=True)
        assert calm["n"] > 30 and wild["n"] > 30
        assert wild["vol"] > 3 * calm["vol"], symbol
    btc_calm = vol.filter(symbol="BTCUSDT", burst=False)["vol"][0]
    expected = 0.50 / math.sqrt(365 * 24 * 60)  # 50 % a year, per minute
    assert 0.7 * expected < btc_calm < 1.4 * expected


def test_burst_schedule_is_independent_of_generation() -> None:
    horizon = DEFAULT_START_MS + 3_600_000
    before = market().bursts(horizon)
    m = market()
    flat(m.batches(50_000))
    assert m.bursts(horizon) == before
    durations = [(e - s) / 1_000 for s, e in before]
    assert all(14 <= d <= 46 for d in durations)  # 30 s ± 50 % for bursts every 120 s
    quiet = SyntheticMarket(3, burst_every_s=math.inf)
    assert quiet.bursts(horizon) == []
    assert len(flat(quiet.batches(1_000))) == 1_000


# --------------------------------------------------------------------------- encoded


def test_encoded_equals_batches_encoded(reference: list[Trade]) -> None:
    messages = flat(market().encoded(N_REFERENCE, batch_size=3_000))
    assert messages == [(t.key.encode(), t.encode(), t.ts_ms) for t in reference]


@pytest.mark.parametrize("per_message", [2, 7, 50])
def test_encoded_per_symbol_arrays(reference: list[Trade], per_message: int) -> None:
    batch_size = 5_000
    chunks = market().encoded(N_REFERENCE, batch_size=batch_size, per_message=per_message)
    stamps = []
    for number, messages in enumerate(chunks):
        expected = reference[number * batch_size : (number + 1) * batch_size]
        got: list[Trade] = []
        for key, value, ts in messages:
            trades, rejected = decode_message(value)
            assert not rejected and 1 <= len(trades) <= per_message
            assert {t.key.encode() for t in trades} == {key}  # type: ignore[union-attr]
            assert value == encode_trades(trades)  # type: ignore[arg-type]
            assert ts == trades[-1].ts_ms
            got += trades  # type: ignore[arg-type]
            stamps.append(ts)
        # The chunk's trades, each symbol's in order, cut into as few messages as possible.
        assert sorted(got, key=lambda t: t.symbol) == sorted(expected, key=lambda t: t.symbol)
        counts = Counter(t.symbol for t in expected)
        assert len(messages) == sum(-(-count // per_message) for count in counts.values())
    assert stamps == sorted(stamps)


def test_ten_thousand_symbols() -> None:
    m = SyntheticMarket(10_000, seed=2)
    assert len(set(m.symbols)) == 10_000
    assert m.symbols[42] == "SYM0042USDT" and m.symbols[-1] == "SYM9999USDT"
    for instrument in m.instruments:
        assert Decimal(instrument.start_price) > 0
        assert Decimal(instrument.start_price) % Decimal(instrument.tick_size) == 0
        assert Decimal("1e-8") <= Decimal(instrument.lot_size) <= 1
    ticks = {i.symbol: Decimal(i.tick_size) for i in m.instruments}
    messages = flat(m.encoded(100_000, batch_size=30_000))
    assert len(messages) == 100_000
    trades = [decode_record(orjson.loads(value)) for _, value, _ in messages]
    assert len({t.symbol for t in trades}) > 2_000
    for trade in trades[::20]:
        assert Decimal(trade.price) % ticks[trade.symbol] == 0  # type: ignore[union-attr]
    df = frame(trades)  # type: ignore[arg-type]
    steps = df.group_by("symbol").agg(pl.col("id").diff().drop_nulls().alias("step"))
    assert (steps.explode("step")["step"] == 1).all()
    assert (np.diff(df["ts"].to_numpy()) >= 0).all()
