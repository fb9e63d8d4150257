"""Activity bars (flows/activity.py) against an independent plain-Decimal reference
(tests/reference_activity.py) under random trades, kinds, batchings and snapshots; the
boundary rule on hand-made cases; the kinds' spelling and errors; and tick bars of the real
BTCUSDT capture against DuckDB SQL, through the time-bar kernel as the flow runs them."""

from __future__ import annotations

import itertools
import pickle
from collections.abc import Sequence
from decimal import Decimal

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewax.codec import Trade, format_scaled, to_scaled
from candlewax.codec.columns import ROW_SCHEMA, decode_batch
from connectors.replay import iter_file
from flows.activity import ACTIVITY_BAR_SCHEMA, ActivityBars, BarKind, parse_kind
from flows.barmath import BarState, EmptyIntervals
from tests.conftest import BTCUSDT_GZ
from tests.reference_activity import kind_name, reference_activity_bars

T0 = 1_723_161_240_000  # 2024-08-08 23:54:00 UTC
_AT_8 = ("open", "close", "high", "low", "volume", "buy_volume")
_AT_16 = ("quote", "buy_quote")


def rows_of(trades: list[Trade], first_off: int = 0) -> pl.DataFrame:
    """Kernel rows (ROW_SCHEMA) of trades, in their order."""
    side = {"buy": True, "sell": False, None: None}
    rows = [
        (False, t.venue, t.symbol, t.id, to_scaled(t.price), to_scaled(t.qty), side[t.side],
         t.ts_ms, t.recv_ms, first_off + i)
        for i, t in enumerate(trades)
    ]  # fmt: skip
    return pl.DataFrame(rows, schema=ROW_SCHEMA, orient="row")


def trade(i: int, price: str, qty: str, side: str | None = "buy", symbol: str = "BTCUSDT",
          ts_ms: int | None = None) -> Trade:  # fmt: skip
    return Trade("x", symbol, str(i), price, qty, side, T0 + i if ts_ms is None else ts_ms)


def as_decimals(frame: pl.DataFrame) -> list[dict[str, object]]:
    """Kernel bars with their amounts as exact Decimals (the reference's form)."""
    out = []
    for row in frame.iter_rows(named=True):
        for name in _AT_8:
            row[name] = Decimal(format_scaled(row[name]))
        for name in _AT_16:
            row[name] = Decimal(format_scaled(row[name], 16))
        out.append(row)
    return out


def run(
    state: ActivityBars, trades: list[Trade], cuts: Sequence[int] = (), snapshot: bool = False
) -> tuple[ActivityBars, dict[str, pl.DataFrame]]:
    """Feed ``trades`` cut at ``cuts`` (pickling the state between batches if ``snapshot``);
    the state and every closed bar, per kind."""
    edges = [0, *sorted(c for c in set(cuts) if 0 < c < len(trades)), len(trades)]
    closed: dict[str, list[pl.DataFrame]] = {}
    for lo, hi in itertools.pairwise(edges):
        for name, frame in state.step(rows_of(trades[lo:hi], lo)).items():
            assert frame.schema == pl.Schema(ACTIVITY_BAR_SCHEMA)
            assert frame.height
            closed.setdefault(name, []).append(frame)
        if snapshot:
            state = pickle.loads(pickle.dumps(state))
    return state, {name: pl.concat(frames) for name, frames in closed.items()}


def kinds(*texts: str) -> tuple[BarKind, ...]:
    return tuple(parse_kind(t) for t in texts)


def by_key(bars: list[dict[str, object]]) -> list[dict[str, object]]:
    return sorted(bars, key=lambda b: (b["venue"], b["symbol"], b["seq"]))


# --------------------------------------------------------------------------- kinds


@pytest.mark.parametrize(
    ("text", "name", "measure", "size"),
    [
        ("tick:1000", "tick:1000", "tick", 1000),
        ("tick:1", "tick:1", "tick", 1),
        ("volume:12.5", "volume:12.5", "volume", 1_250_000_000),
        ("volume:12.50000000", "volume:12.5", "volume", 1_250_000_000),
        ("volume:100.0", "volume:100", "volume", 10_000_000_000),
        ("volume:0.00000001", "volume:0.00000001", "volume", 1),
        ("value:1000000", "value:1000000", "value", 10**6 * 10**16),
        ("value:0.5", "value:0.5", "value", 5 * 10**15),
        ("value:99999999999999.99999999", "value:99999999999999.99999999", "value",
         (10**22 - 1) * 10**8),
    ],
)  # fmt: skip
def test_parse_kind_reads_and_spells_one_canonical_name(
    text: str, name: str, measure: str, size: int
) -> None:
    kind = parse_kind(text)
    assert (kind.measure, kind.size, kind.name, str(kind)) == (measure, size, name, name)
    assert parse_kind(kind.name) == kind
    assert kind_name(text) == name  # the reference spells it the same way


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("bars:5", "expected tick:<N>, volume:<V> or value:<Q>"),
        ("TICK:5", "expected tick:<N>"),
        ("tick", "expected tick:<N>"),
        ("", "expected tick:<N>"),
        ("tick:0", "positive"),
        ("tick:-3", "positive"),
        ("tick:1.5", "whole number"),
        ("tick:1e3", "whole number"),
        ("tick:007", "leading zero"),
        ("tick:", "whole number"),
        ("tick:10000001", "too large"),
        ("tick:" + "9" * 5000, "too large"),
        ("volume:0", "positive"),
        ("volume:0.000000000", "positive"),
        ("volume:-1", "positive"),
        ("volume:1e5", "not a plain decimal"),
        ("volume:.5", "not a plain decimal"),
        ("volume:+5", "not a plain decimal"),
        ("volume: 5", "not a plain decimal"),
        ("volume:NaN", "not a plain decimal"),
        ("volume:0.000000001", "more than 8 decimals"),
        ("value:100000000000000", "too large"),
        ("value:1" + "0" * 100, "not a plain decimal"),
        ("value:", "not a plain decimal"),
    ],
)
def test_parse_kind_rejects_anything_else_saying_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match="bar kind") as caught:
        parse_kind(text)
    assert message in str(caught.value)
    assert len(str(caught.value)) < 200  # bounded, even for absurd input


@pytest.mark.parametrize(
    ("measure", "size"),
    [("ticks", 1), ("tick", 0), ("volume", -1), ("tick", 10**7 + 1), ("volume", 10**22),
     ("value", 10**30), ("value", 123), ("tick", True)],
)  # fmt: skip
def test_a_kind_built_directly_is_checked_too(measure: str, size: int) -> None:
    with pytest.raises(ValueError):
        BarKind(measure, size)


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["volume", "value"]),
    st.integers(0, 10**14 - 1),
    st.integers(0, 10**8 - 1),
    st.integers(0, 8),
)
def test_any_spelling_of_a_size_reads_to_the_kind_its_name_reads_to(
    measure: str, whole: int, frac: int, zeros: int
) -> None:
    text = f"{measure}:{whole}.{frac:08d}" + "0" * zeros
    if whole == 0 and frac == 0:
        with pytest.raises(ValueError, match="positive"):
            parse_kind(text)
        return
    kind = parse_kind(text)
    assert parse_kind(kind.name) == kind
    assert kind.name == kind_name(text)
    assert not kind.name.endswith((".", "0")) or "." not in kind.name


def test_configuration_errors_are_clear() -> None:
    with pytest.raises(ValueError, match="not venue:SYMBOL"):
        ActivityBars({"BTCUSDT": kinds("tick:5")})
    with pytest.raises(ValueError, match="not venue:SYMBOL"):
        ActivityBars({"Binance:BTCUSDT": kinds("tick:5")})
    with pytest.raises(ValueError, match="volume:1 listed twice"):
        ActivityBars({"x:BTCUSDT": kinds("volume:1", "volume:1.0")})
    with pytest.raises(ValueError, match="not a BarKind"):
        ActivityBars(default=("tick:5",))  # type: ignore[arg-type]
    # Symbols may hold ':' (Finnhub's BINANCE:BTCUSDT): the venue ends at the first one.
    state = ActivityBars({"finnhub:BINANCE:BTCUSDT": kinds("tick:1")})
    assert state.kinds("finnhub", "BINANCE:BTCUSDT") == kinds("tick:1")


# --------------------------------------------------------------------------- the rule


def test_a_trade_exactly_on_the_boundary_closes_its_bar() -> None:
    state = ActivityBars({"x:BTCUSDT": kinds("volume:1", "value:100")})
    trades = [trade(0, "50", "0.4"), trade(1, "50", "0.6"), trade(2, "51", "0.5")]
    state, closed = run(state, trades)
    # 0.4 + 0.6 = 1 exactly: the second trade closes the volume bar; the third starts the next.
    [bar] = as_decimals(closed["volume:1"])
    assert (bar["open_id"], bar["close_id"], bar["volume"], bar["trades"]) == ("0", "1", 1, 2)
    assert bar["quote"] == Decimal(50) and bar["seq"] == 0
    # 20 + 30 = 50 of value: nothing closes at 100 yet; 25.5 more (75.5): still forming.
    assert "value:100" not in closed
    forming = state.forming()
    assert [b["trades"] for b in as_decimals(forming["value:100"])] == [3]
    assert [(b["open_id"], b["seq"]) for b in as_decimals(forming["volume:1"])] == [("2", 1)]


def test_a_huge_trade_spanning_several_boundaries_closes_one_bar_and_skips_the_grid_lines() -> None:
    state = ActivityBars({"x:BTCUSDT": kinds("volume:10")})
    trades = [
        trade(0, "100", "4"),  # C 4
        trade(1, "101", "33"),  # C 37: crosses 10, 20, 30 — one bar, not split
        trade(2, "102", "2"),  # C 39: the bar of the cell [30, 40), which began mid-cell
        trade(3, "103", "1"),  # C 40: closes it with 3 lots (less than 10: the grid holds)
        trade(4, "104", "10"),  # C 50: a whole bar of its own, exactly on the line
        trade(5, "105", "0.5"),  # forming
    ]
    state, closed = run(state, trades)
    bars = as_decimals(closed["volume:10"])
    assert [(b["seq"], b["open_id"], b["close_id"], b["volume"]) for b in bars] == [
        (0, "0", "1", 37),
        (1, "2", "3", 3),
        (2, "4", "4", 10),
    ]
    assert bars[0]["quote"] == Decimal(400) + Decimal(101 * 33)
    assert [b["volume"] for b in as_decimals(state.forming()["volume:10"])] == [Decimal("0.5")]
    # The carry is C mod size: it never grows with the symbol's history.
    assert state.carry["r"].to_list() == [to_scaled("0.5")]


def test_tick_1_makes_one_bar_per_trade_and_tick_n_exactly_n() -> None:
    trades = [trade(i, f"{100 + i}", "0.1", ["buy", "sell", None][i % 3]) for i in range(10)]
    state, closed = run(ActivityBars(default=kinds("tick:1", "tick:3")), trades, cuts=[4, 5])
    ones = as_decimals(closed["tick:1"])
    assert [(b["seq"], b["open_id"], b["close_id"], b["trades"]) for b in ones] == [
        (i, str(i), str(i), 1) for i in range(10)
    ]
    assert [b["trades"] for b in as_decimals(closed["tick:3"])] == [3, 3, 3]
    assert [b["trades"] for b in as_decimals(state.forming()["tick:3"])] == [1]
    assert "tick:1" not in state.forming()


def test_buy_sell_and_unknown_sides() -> None:
    trades = [
        trade(0, "10", "1", "buy"),
        trade(1, "20", "2", "sell"),
        trade(2, "30", "3", None),
        trade(3, "40", "4", "buy"),
    ]
    _, closed = run(ActivityBars(default=kinds("tick:4")), trades)
    [bar] = as_decimals(closed["tick:4"])
    assert (bar["volume"], bar["buy_volume"]) == (10, 5)
    assert (bar["quote"], bar["buy_quote"]) == (10 + 40 + 90 + 160, 10 + 160)
    assert (bar["open"], bar["high"], bar["low"], bar["close"]) == (10, 40, 10, 40)


def test_order_inside_a_bar_is_log_order_and_its_span_covers_every_trade() -> None:
    """A trade that arrives after a later one (event time) is still the bar's last: the close is
    the trade that crossed the line; start_ms/end_ms span the trades' times."""
    trades = [
        trade(0, "10", "1", ts_ms=T0 + 500),
        trade(1, "11", "1", ts_ms=T0 + 100),
        trade(2, "12", "1", ts_ms=T0 + 900),
        trade(3, "13", "1", ts_ms=T0 + 300),
    ]
    _, closed = run(ActivityBars(default=kinds("tick:4")), trades)
    [bar] = as_decimals(closed["tick:4"])
    assert (bar["open_id"], bar["open_ts"], bar["close_id"], bar["close_ts"]) == (
        "0", T0 + 500, "3", T0 + 300,
    )  # fmt: skip
    assert (bar["start_ms"], bar["end_ms"]) == (T0 + 100, T0 + 901)
    assert (bar["open"], bar["close"], bar["high"], bar["low"]) == (10, 13, 13, 10)


def test_many_symbols_get_bars_of_their_own() -> None:
    names = [f"S{n:03d}" for n in range(60)]
    trades = [trade(i, f"{1 + i % 7}", "1", symbol=names[i % len(names)]) for i in range(60 * 7)]
    config = {f"x:{s}": kinds("tick:7") for s in names[:40]}
    state, closed = run(ActivityBars(config, default=kinds("tick:2")), trades, cuts=[100, 101, 333])
    sevens = closed["tick:7"]
    assert sorted(sevens["symbol"].to_list()) == names[:40]
    assert sevens["trades"].to_list() == [7] * 40
    twos = closed["tick:2"]
    assert set(twos["symbol"]) == set(names[40:])
    assert twos.group_by("symbol").len()["len"].to_list() == [3] * 20
    assert twos.select(pl.col("seq").max()).item() == 2
    assert set(state.forming()["tick:2"]["symbol"]) == set(names[40:])


def test_a_symbol_not_configured_gets_no_bars() -> None:
    trades = [trade(i, "10", "1", symbol="ETHUSDT") for i in range(5)]
    state = ActivityBars({"x:BTCUSDT": kinds("tick:1")})
    assert state.configured
    _, closed = run(state, trades)
    assert closed == {} and state.forming() == {}
    assert state.carry["symbol"].to_list() == ["BTCUSDT"]  # the carry holds configured keys only
    # Listed without kinds: opted out of the default.
    state = ActivityBars({"x:ETHUSDT": ()}, default=kinds("tick:1"))
    _, closed = run(state, [*trades, trade(9, "10", "1")])
    assert closed["tick:1"]["symbol"].to_list() == ["BTCUSDT"]
    assert state.carry["symbol"].to_list() == ["BTCUSDT"]
    assert not ActivityBars().configured
    assert ActivityBars().step(rows_of(trades)) == {}


def test_heartbeat_rows_and_empty_batches_make_nothing() -> None:
    state = ActivityBars(default=kinds("tick:1"))
    rows = rows_of([trade(0, "10", "1")])
    none = pl.lit(None, pl.Int128)
    beat = rows.with_columns(hb=pl.lit(True), symbol=pl.lit(None, pl.String), p=none, q=none)
    assert state.step(rows.clear()) == {}
    assert state.step(beat) == {}
    assert state.step(pl.concat([beat, rows, beat]))["tick:1"].height == 1


def test_the_state_pickles_mid_bar_and_resumes_exactly() -> None:
    trades = [trade(i, f"{100 + i}", "0.3", ["buy", None][i % 2]) for i in range(12)]
    config = {"x:BTCUSDT": kinds("volume:1", "value:100", "tick:5")}
    _, straight = run(ActivityBars(config), trades)
    state, _ = run(ActivityBars(config), trades[:3])
    assert state.carry.filter(pl.col("trades") > 0).height == 3  # every kind mid-bar
    blob = pickle.dumps(state)
    assert len(blob) < 20_000  # config and one carry row per (venue, symbol, kind)
    restored = pickle.loads(blob)
    assert restored.carry.equals(state.carry) and restored.symbols == state.symbols
    _, rest = run(restored, trades[3:])
    _, first = run(ActivityBars(config), trades[:3])
    for name, frame in straight.items():
        parts = [f[name] for f in (first, rest) if name in f]
        assert pl.concat(parts).equals(frame), name


def test_value_bars_compare_the_exact_quote() -> None:
    """1e-16 matters: 0.33333333 × 3 = 0.99999999 is not 1, and the bar waits for more."""
    state = ActivityBars(default=kinds("value:1"))
    trades = [trade(i, "0.33333333", "1") for i in range(3)]
    _, closed = run(state, trades)
    assert closed == {}
    _, closed = run(state, [trade(3, "0.00000001", "1")])
    [bar] = as_decimals(closed["value:1"])
    assert bar["quote"] == 1 and bar["trades"] == 4


# --------------------------------------------------------------------------- property tests

_SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
_SIZES = {
    "tick": st.integers(1, 9).map(str),
    "volume": st.sampled_from(["0.00000001", "0.5", "1", "2.5", "7.25", "40", "0.12345678"]),
    "value": st.sampled_from(["0.00000001", "1", "50", "333.33", "1000", "123456.789"]),
}


@st.composite
def kind_texts(draw: st.DrawFn) -> str:
    measure = draw(st.sampled_from(list(_SIZES)))
    return f"{measure}:{draw(_SIZES[measure])}"


@st.composite
def activity_logs(
    draw: st.DrawFn,
) -> tuple[list[Trade], dict[str, list[str]], list[str], list[int]]:
    """Trades of a few symbols (sizes from dust to spanning many bars, times a little out of
    order), a configuration (some symbols listed, maybe a default) and batch cuts."""
    n = draw(st.integers(1, 80))
    trades = []
    clock = T0
    for i in range(n):
        clock += draw(st.integers(0, 2_000))
        whole = draw(st.sampled_from([0, 0, 1, 3, 20, 500]))
        qty = f"{whole}.{draw(st.integers(0 if whole else 1, 10**8 - 1)):08d}"
        price = draw(st.sampled_from(["0.00000001", "0.5", "3", "99.99", "61828.01"]))
        trades.append(
            Trade(
                "x",
                draw(st.sampled_from(_SYMBOLS)),
                str(i),
                price,
                qty,
                draw(st.sampled_from(["buy", "sell", None])),
                clock - draw(st.integers(0, 1_000)),
            )
        )
    listed = draw(st.lists(st.sampled_from(_SYMBOLS), max_size=3, unique=True))
    config = {
        f"x:{s}": draw(st.lists(kind_texts(), max_size=3, unique_by=kind_name)) for s in listed
    }
    default = draw(st.lists(kind_texts(), max_size=3, unique_by=kind_name))
    cuts = draw(st.lists(st.integers(0, n), max_size=8))
    return trades, config, default, cuts


def _state(config: dict[str, list[str]], default: list[str]) -> ActivityBars:
    return ActivityBars({k: kinds(*v) for k, v in config.items()}, kinds(*default))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(activity_logs(), st.booleans())
def test_activity_bars_equal_the_reference_for_any_trades_kinds_and_batching(
    case: tuple[list[Trade], dict[str, list[str]], list[str], list[int]], snapshot: bool
) -> None:
    trades, config, default, cuts = case
    state, closed = run(_state(config, default), trades, cuts, snapshot)
    want_closed, want_forming = reference_activity_bars(trades, config, default)
    assert set(closed) == set(want_closed)
    for name, frame in closed.items():
        assert by_key(as_decimals(frame)) == by_key(want_closed[name]), name
    forming = state.forming()
    assert set(forming) == set(want_forming)
    for name, frame in forming.items():
        assert as_decimals(frame) == want_forming[name], name


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(activity_logs(), st.lists(st.integers(0, 80), max_size=12))
def test_the_same_bars_whatever_the_batching_and_nothing_lost(
    case: tuple[list[Trade], dict[str, list[str]], list[str], list[int]], other_cuts: list[int]
) -> None:
    trades, config, default, cuts = case
    one, whole = run(_state(config, default), trades)
    many, cut = run(_state(config, default), trades, [*cuts, *other_cuts], snapshot=True)
    assert whole.keys() == cut.keys()
    for name, frame in whole.items():  # each batch's bars come sorted by (venue, symbol, seq)
        assert (
            cut[name].sort("venue", "symbol", "seq").equals(frame.sort("venue", "symbol", "seq"))
        ), name
    assert one.carry.sort("venue", "symbol", "kind").equals(
        many.carry.sort("venue", "symbol", "kind")
    )
    # Every trade of a configured symbol is in exactly one bar of each of its kinds.
    rows = rows_of(trades)
    for name in {*whole, *one.forming()}:
        bars = pl.concat([f[name] for f in (whole, one.forming()) if name in f])
        got = bars.group_by("venue", "symbol").agg(pl.col("trades", "volume", "quote").sum())
        symbols = got["symbol"].to_list()
        want = (
            rows.filter(pl.col("symbol").is_in(symbols))
            .group_by("venue", "symbol")
            .agg(trades=pl.len().cast(pl.Int64), volume=pl.col("q").sum(),
                 quote=(pl.col("p") * pl.col("q")).sum())
        )  # fmt: skip
        assert got.sort("symbol").equals(want.sort("symbol")), name


# --------------------------------------------------------------------------- the real capture


def test_tick_bars_of_the_btcusdt_capture_match_duckdb_through_the_time_kernel() -> None:
    """As the flow runs them: the time-bar kernel's on-time trades feed the activity bars.
    Tick bars of 1000 are groups of 1000 consecutive trades in log order (trade-id order)."""
    trades = [t for item in iter_file(BTCUSDT_GZ) for t in item.trades]
    values = [t.encode() for t in trades]
    kernel = BarState(empty=EmptyIntervals("skip"))
    state = ActivityBars(default=kinds("tick:1000", "volume:5"))
    closed: dict[str, list[pl.DataFrame]] = {}
    for lo in range(0, len(values), 2_345):
        hi = min(lo + 2_345, len(values))
        result = kernel.step(decode_batch(values[lo:hi], list(range(lo, hi))).rows)
        for name, frame in state.step(result.on_time).items():
            closed.setdefault(name, []).append(frame)
    ticks = pl.concat(closed["tick:1000"])
    assert ticks.height == len(trades) // 1000
    raw = pl.DataFrame(  # noqa: F841 - read by name in the SQL below
        {
            "n": range(len(trades)),
            "id": [t.id for t in trades],
            "price": [t.price for t in trades],
            "qty": [t.qty for t in trades],
            "buy": [t.side == "buy" for t in trades],
        }
    )
    expected = duckdb.sql(
        """
        select n // 1000 as seq,
               arg_min(id, n) as open_id, arg_max(id, n) as close_id,
               arg_min(price::decimal(38,8), n) as open, arg_max(price::decimal(38,8), n) as close,
               max(price::decimal(38,8)) as high, min(price::decimal(38,8)) as low,
               sum(qty::decimal(38,8)) as volume,
               sum(price::decimal(38,8) * qty::decimal(38,8)) as quote,
               sum(case when buy then qty::decimal(38,8) else 0 end) as buy_volume,
               count(*) as trades
        from raw group by 1 having count(*) = 1000 order by 1
        """
    ).pl()
    ours = as_decimals(ticks)
    assert len(ours) == expected.height
    for bar, row in zip(ours, expected.iter_rows(named=True), strict=True):
        for name, value in row.items():
            assert bar[name] == value, (row["seq"], name)
    # Volume bars of the capture: with the forming bar, they hold every trade once.
    volume = pl.concat(closed["volume:5"])
    forming = state.forming()["volume:5"]
    assert volume["trades"].sum() + forming["trades"].sum() == len(trades)
    assert volume["volume"].sum() + forming["volume"].sum() == sum(to_scaled(t.qty) for t in trades)


def test_a_restart_with_other_settings_keeps_what_is_still_configured() -> None:
    trades = [trade(i, "10", "1", symbol=["BTCUSDT", "ETHUSDT"][i % 2]) for i in range(6)]
    state = ActivityBars({"x:BTCUSDT": kinds("tick:5", "volume:10")}, default=kinds("tick:4"))
    state, _ = run(state, trades)  # BTCUSDT: 3 trades; ETHUSDT: 3 trades (default tick:4)
    changed = pickle.loads(pickle.dumps(state)).reconfigured(
        {"x:BTCUSDT": kinds("tick:5", "tick:2")}, default=kinds("tick:4", "tick:1")
    )
    assert changed.kinds("x", "BTCUSDT") == kinds("tick:5", "tick:2")
    _, closed = run(changed, [trade(10 + i, "10", "1") for i in range(2)])
    # tick:5 kept its 3 trades and closes with the 2 new ones; tick:2 started now; volume:10
    # is gone; ETHUSDT keeps its forming tick:4 bar and gets tick:1 from its next trade.
    assert closed["tick:5"]["trades"].to_list() == [5]
    assert closed["tick:2"]["trades"].to_list() == [2]
    assert "volume:10" not in closed and "volume:10" not in changed.forming()
    assert changed.forming()["tick:4"]["trades"].to_list() == [3]
    _, closed = run(changed, [trade(20, "10", "1", symbol="ETHUSDT")])
    assert closed["tick:4"]["trades"].to_list() == [4]
    assert closed["tick:1"]["open_id"].to_list() == ["20"]
