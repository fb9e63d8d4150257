"""The gateway's market state against the independent Decimal reference (tests/reference.py), and
its parsers' totality over arbitrary input."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from candlewax.codec import Bar, Trade
from sinks.gateway.market import Market
from sinks.gateway.protocol import ProtocolError, Request, parse_request
from sinks.gateway.streams import Stream, StreamError, parse_stream
from tests.reference import reference_bars

T0 = 1_723_161_600_000  # a 5m and 1h boundary
DECIMALS = ("open", "high", "low", "close", "volume", "quote_volume", "vwap", "buy_volume", "buy_quote_volume")  # fmt: skip


def _decimal(units: int) -> str:
    return f"{Decimal(units) / 10**8:.8f}"


trades_st = st.lists(
    st.tuples(
        st.integers(0, 4 * 60_000 - 1),  # ts offset: four minutes of one 5m window
        st.integers(1, 10**12),  # price units
        st.integers(1, 10**9),  # qty units
        st.sampled_from(["buy", "sell", None]),
    ),
    min_size=1,
    max_size=60,
)


def _trades(raw: list[tuple[int, int, int, str | None]]) -> list[Trade]:
    return [
        Trade("binance", "BTCUSDT", str(i), _decimal(p), _decimal(q), side, T0 + dt, T0 + dt)
        for i, (dt, p, q, side) in enumerate(raw)
    ]


def _bar(ref: dict) -> Bar:
    return Bar(
        **{k: (format(v, "f") if k in DECIMALS else v) for k, v in ref.items()},
        complete=True,
        gaps=0,
    )


def _same(summary_fields: dict, ref: dict) -> None:
    for name in DECIMALS:
        assert Decimal(summary_fields[name]) == Decimal(ref[name]), name
    for name in ("start_ms", "end_ms", "trades", "first_id", "last_id"):
        assert summary_fields[name] == ref[name], name


@settings(max_examples=300, deadline=None)
@given(raw=trades_st, closed_minutes=st.integers(0, 3), duplicate=st.booleans())
def test_forming_bars_of_every_interval_equal_the_reference(
    raw: list, closed_minutes: int, duplicate: bool
) -> None:
    """Some minutes closed by the flow's 1m bars, the rest from trades (a trade sent twice
    counts once): the forming 1m and 5m bars and the ticker equal bars computed from all the
    trades."""
    trades = sorted(_trades(raw), key=lambda t: t.ts_ms)
    market = Market()
    cut = T0 + closed_minutes * 60_000
    flow_bars = [b for b in reference_bars([t for t in trades if t.ts_ms < cut], "1m")]
    live = [t for t in trades if t.ts_ms >= cut]
    for bar in flow_bars:
        market.add_bar(_bar(bar))
    for t in live + (live[:1] if duplicate else []):
        market.add_trade(t)
    newest = max(t.ts_ms for t in trades)
    window_1m = [t for t in trades if t.ts_ms - t.ts_ms % 60_000 == newest - newest % 60_000]
    forming = market.forming_bar("binance", "BTCUSDT", "1m")
    assert forming is not None
    (ref_1m,) = reference_bars(window_1m, "1m")
    _same(forming.fields(), ref_1m)
    five = market.forming_bar("binance", "BTCUSDT", "5m")
    assert five is not None
    (ref_5m,) = reference_bars(trades, "5m")
    _same(five.fields(), ref_5m)
    ticker = market.ticker("binance", "BTCUSDT")
    assert ticker is not None
    assert Decimal(_decimal(ticker.volume)) == ref_5m["volume"]
    assert ticker.trades == len(trades)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300).map(str.encode)))
def test_parse_request_is_total(data: bytes) -> None:
    try:
        assert isinstance(parse_request(data), Request)
    except ProtocolError as exc:
        reply = exc.reply()
        assert reply["error"]["code"] in (0, 1, 2, 3) and len(reply["error"]["msg"]) < 400


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=200), st.integers(), st.none(), st.lists(st.text(max_size=5))))
def test_parse_stream_is_total(name: object) -> None:
    try:
        assert isinstance(parse_stream(name, "binance", ("1m", "5m")), Stream)
    except StreamError as exc:
        assert "\n" not in str(exc) and len(str(exc)) < 400
