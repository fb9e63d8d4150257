"""The start-up fill against real local servers: a connector started mid-window (its clock set
inside a recorded capture) fetches the window's trades over REST — by time and by id from the
Binance-like server, walking back by cursor on the Coinbase-like one — publishes a Since marker,
the window's trades in id order and then the live ones, into the real broker.

The expected bars come from all of the window's recorded trades through the plain-Decimal
reference (tests/reference.py), never from the code under test. The flow itself is not run
here: what the connector owes it is the content of ``trades``.
"""

from __future__ import annotations

import threading
import time
import uuid
from bisect import bisect_left
from collections.abc import Callable
from functools import cache
from typing import Any

import orjson
import pytest
from bytewax.testing import run_main
from websockets.asyncio.server import ServerConnection

from candlewax.codec import DeadLetter, Gap, Since, Trade, decode_message
from candlewax.settings import Settings
from candlewax.topics import ensure_topics
from connectors.live import ConnectionStats, LiveConnector, LiveOptions
from connectors.producer import TradeProducer
from connectors.venues import BINANCE, BINANCE_USDM, COINBASE, VenueSpec
from flows.bars import build_flow
from tests.conftest import BTCUSDT_GZ, FIXTURES
from tests.kafka_read import read_topic
from tests.reference import as_decimals, reference_bars
from tests.servers import CoinbaseRest, RestServer, WsServer, hold, send_all, trade_frames

pytestmark = pytest.mark.integration

#: 2024-08-08 23:57:30 UTC, inside the spot and USDⓈ-M captures (23:54:15 → 00:00:01).
NOW = 1723161450000
W5 = 1723161300000  # the current 5m window starts 23:55:00
W1 = 1723161420000  # the current 1m window starts 23:57:00
END = 1723161600000  # 00:00:00: the 5m window's end
INTERVALS = ("1m", "5m")


@cache
def capture(name: str) -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]]:
    """Every raw ``@trade`` frame of an hftbacktest capture, and its data object."""
    frames, data = trade_frames(FIXTURES / "hftbacktest" / name)
    return tuple(frames), tuple(data)


def spot() -> tuple[tuple[str, ...], tuple[dict[str, Any], ...]]:
    return capture(BTCUSDT_GZ.name)


def spot_rows(data: tuple[dict[str, Any], ...]) -> list[dict[str, Any]]:
    """The recorded trades as ``historicalTrades`` rows."""
    return [
        {"id": d["t"], "price": d["p"], "qty": d["q"], "quoteQty": "0", "time": d["T"],
         "isBuyerMaker": d["m"], "isBestMatch": True}
        for d in data
    ]  # fmt: skip


def expected_trade(venue: str, d: dict[str, Any], id_field: str = "t") -> Trade:
    """A recorded Binance trade as the record it must become (built from the raw fields)."""
    return Trade.build(venue=venue, symbol=d["s"], id=d[id_field], price=d["p"], qty=d["q"],
                       side="sell" if d["m"] else "buy", ts_ms=d["T"])  # fmt: skip


def fields(records: list[Any]) -> list[tuple[object, ...]]:
    """What a trade says (its receive time aside: filled trades have none)."""
    return [(t.venue, t.symbol, t.id, t.price, t.qty, t.side, t.ts_ms) for t in records]


def options(ws: WsServer, rest: RestServer, **changes: Any) -> LiveOptions:
    base: dict[str, Any] = dict(
        ws_url=ws.url, rest_url=rest.url, fill=True, fill_intervals=INTERVALS, fill_pace_s=0.0,
        clock_ms=lambda: NOW, backoff_initial_s=0.1,
    )  # fmt: skip
    base.update(changes)
    return LiveOptions(**base)


def run(
    spec: VenueSpec, symbol: str, settings: Settings, ws: WsServer, opts: LiveOptions,
    done: Callable[[LiveConnector], bool],
) -> LiveConnector:  # fmt: skip
    """Run a connector until ``done(connector)`` (polled, bounded by a deadline)."""
    stop = threading.Event()
    producer = TradeProducer(
        settings.connection, settings.topic("trades"), settings.topic("deadletter")
    )
    connector = LiveConnector(spec, [symbol], producer, opts, stop)
    errors: list[BaseException] = []

    def main() -> None:
        try:
            connector.run()
        except BaseException as exc:
            errors.append(exc)

    runner = threading.Thread(target=main)
    runner.start()
    deadline = time.monotonic() + 60
    while not done(connector) and runner.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)  # poll the condition; the deadline bounds it
    stop.set()
    runner.join(timeout=30)
    assert not errors, errors
    assert done(connector), connector.stats()
    return connector


def reached(symbol: str, last_id: int) -> Callable[[LiveConnector], bool]:
    """Done once the connection has published up to ``last_id`` of ``symbol``."""
    return lambda c: (
        c.connections[0].last_id.get(symbol) == last_id and not c.connections[0].held_live
    )


def records(settings: Settings, key: bytes) -> list[Trade | Since | Gap]:
    """Trades and markers of one symbol's key, in log order."""
    out: list[Trade | Since | Gap] = []
    for _, _, k, value in read_topic(settings.bootstrap_servers, settings.topic("trades")):
        if k == key:
            out.extend(r for r in decode_message(value)[0] if isinstance(r, Trade | Since | Gap))
    return out


def letters(settings: Settings) -> list[DeadLetter]:
    return [
        DeadLetter.decode(v)
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic("deadletter"))
    ]


def bars(trades: list[Trade], start: int, end: int) -> dict[str, list[dict[str, object]]]:
    """Reference bars of every interval, windows inside [start, end)."""
    return {
        interval: [
            b
            for b in reference_bars(trades, interval)
            if start <= b["start_ms"] and b["end_ms"] <= end  # type: ignore[operator]
        ]
        for interval in INTERVALS
    }


def summary(stats: ConnectionStats) -> tuple[int, int, int, int]:
    return stats.filled, stats.duplicates, stats.backfilled, stats.unrecovered


# --------------------------------------------------------------------------- the seam


@pytest.mark.parametrize("seam", ["overlap", "gap"])
def test_binance_spot_started_mid_window_publishes_the_whole_window_then_live(
    settings: Settings, seam: str
) -> None:
    """Started at 23:57:30 with 1m and 5m bars: Since 23:55:00 first, then every trade from
    23:55:00 on exactly once in id order — the fill (by time: aggTrades' ``f``; by id:
    historicalTrades) joined to the live stream either over trades both delivered (dropped as
    duplicates) or over trades neither did (backfilled as a gap) — and the bars of the 5m
    window equal those of all its recorded trades."""
    frames, data = spot()
    ids, times = [d["t"] for d in data], [d["T"] for d in data]
    now_i, w5_i = bisect_left(times, NOW), bisect_left(times, W5)
    rest = RestServer(spot_rows(data), agg_path="/api/v3/aggTrades")
    rest.available_until = ids[now_i - 1]  # the trades that happened before the fill asks
    live_from = now_i - 50 if seam == "overlap" else now_i + 20
    if seam == "gap":  # trades now_i.. happen after the fill asked and before the stream began

        def later(path: str, query: dict[str, str]) -> None:
            if int(query.get("fromId", 0)) > ids[now_i - 1]:
                rest.available_until = ids[-1]

        rest.hook = later

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[live_from:])
        await hold(ws)

    with WsServer([session]) as ws_server, rest:
        connector = run(BINANCE, "BTCUSDT", settings, ws_server, options(ws_server, rest),
                        reached("BTCUSDT", ids[-1]))  # fmt: skip

    got = records(settings, b"binance:BTCUSDT")
    assert got[0] == Since("binance", "BTCUSDT", W5)
    trades = got[1:]
    assert all(isinstance(t, Trade) for t in trades)  # no gap marker anywhere
    assert fields(trades) == fields([expected_trade("binance", d) for d in data[w5_i:]])
    filled = now_i - w5_i
    assert summary(connector.stats()) == (
        (filled, 50, 0, 0) if seam == "overlap" else (filled, 0, 20, 0)
    )
    # The fill: the newest trade, the first one of 23:55:00 (both by aggTrades), then three
    # pages of 1,000 by id.
    assert rest.paths[:5] == ["/api/v3/aggTrades"] * 2 + ["/api/v3/historicalTrades"] * 3
    assert rest.requests[1][1]["startTime"] == str(W5)
    assert rest.requests[2][1]["fromId"] == str(ids[w5_i])
    window = [expected_trade("binance", d) for d in data if W5 <= d["T"] < END]
    assert bars(trades, W5, END) == bars(window, W5, END)  # type: ignore[arg-type]
    assert len(bars(window, W5, END)["5m"]) == 1 and len(bars(window, W5, END)["1m"]) == 5
    assert letters(settings) == []
    # The real flow over what the connector published: the 5m bar of the window it started in
    # equals the bar of all the window's recorded trades, and says it is complete.
    flow = settings.replace(intervals=("1m", "5m"), exit_when_done=True, archive_trades=False)
    run_main(build_flow(flow))
    made = [
        orjson.loads(v) for _, _, _, v in read_topic(flow.bootstrap_servers, flow.topic("bars"))
    ]
    five = [b for b in made if b["interval"] == "5m" and b["start_ms"] == W5]
    assert [as_decimals(b) for b in five] == [as_decimals(b) for b in bars(window, W5, END)["5m"]]
    assert five[0]["complete"] is True and five[0]["gaps"] == 0
    minutes = [b for b in made if b["interval"] == "1m" and W5 <= b["start_ms"] < END]
    assert len(minutes) == 5 and all(b["complete"] for b in minutes)


def test_two_symbols_fill_merged_in_time_order_before_any_live_trade(settings: Settings) -> None:
    """BTCUSDT and ETHUSDT on one partition: both Since markers first, then both windows'
    trades merged by event time (the partition's watermark follows both symbols: ETHUSDT's
    23:55 trades after BTCUSDT's 23:57 ones would be late), then the live trades."""
    one = Settings(bootstrap_servers=settings.bootstrap_servers, partitions=1, retention_ms=-1,
                   topic_prefix=f"t{uuid.uuid4().hex[:10]}.")  # fmt: skip
    ensure_topics(one)
    btc_frames, btc = spot()
    eth_frames, eth = capture("spot_ethusdt_20240808.gz")
    rest = RestServer({"BTCUSDT": spot_rows(btc), "ETHUSDT": spot_rows(eth)},
                      agg_path="/api/v3/aggTrades")  # fmt: skip
    rest.available_until, rest.available_before_ms = 1 << 62, NOW
    frames = sorted(
        [(d["T"], f) for d, f in zip(btc, btc_frames, strict=True) if NOW - 2_000 <= d["T"] < END]
        + [(d["T"], f) for d, f in zip(eth, eth_frames, strict=True) if NOW - 2_000 <= d["T"] < END]
    )

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, [f for _, f in frames])
        await hold(ws)

    last = {
        s: max(d["t"] for d in data if d["T"] < END)
        for s, data in (("BTCUSDT", btc), ("ETHUSDT", eth))
    }
    stop = threading.Event()
    with WsServer([session]) as ws_server, rest:
        producer = TradeProducer(one.connection, one.topic("trades"), one.topic("deadletter"))
        connector = LiveConnector(
            BINANCE, ["BTCUSDT", "ETHUSDT"], producer, options(ws_server, rest), stop
        )
        runner = threading.Thread(target=connector.run)
        runner.start()
        deadline = time.monotonic() + 60
        conn = connector.connections[0]
        while time.monotonic() < deadline and (
            any(conn.last_id.get(s) != i for s, i in last.items()) or conn.held_live
        ):
            time.sleep(0.05)  # poll the condition; the deadline bounds it
        stop.set()
        runner.join(timeout=30)

    got = [
        r
        for *_, v in read_topic(one.bootstrap_servers, one.topic("trades"))
        for r in decode_message(v)[0]
        if isinstance(r, Trade | Since | Gap)
    ]
    assert set(got[:2]) == {Since("binance", "BTCUSDT", W5), Since("binance", "ETHUSDT", W5)}
    filled = connector.stats().filled
    fill = got[2 : 2 + filled]
    assert filled == sum(1 for d in (*btc, *eth) if W5 <= d["T"] < NOW)
    assert [t.ts_ms for t in fill] == sorted(t.ts_ms for t in fill)  # type: ignore[union-attr]
    assert {t.symbol for t in fill} == {"BTCUSDT", "ETHUSDT"}  # type: ignore[union-attr]
    for symbol, data in (("BTCUSDT", btc), ("ETHUSDT", eth)):
        mine = [t for t in got[2:] if isinstance(t, Trade) and t.symbol == symbol]
        assert fields(mine) == fields(
            [expected_trade("binance", d) for d in data if W5 <= d["T"] < END]
        )


@pytest.mark.parametrize("budget", [4, 2])
def test_a_budget_short_of_the_longest_window_claims_only_what_it_can_fetch(
    settings: Settings, budget: int
) -> None:
    """The 5m window needs 5 requests (2 probes, 3 pages). With 4, the fill covers the longest
    window 4 requests can complete — 1m, from 23:57:00 — and its Since says so; with 2, none:
    no Since marker, no filled trade, the live trades as they come (the first window partial)."""
    frames, data = spot()
    ids, times = [d["t"] for d in data], [d["T"] for d in data]
    now_i, w1_i = bisect_left(times, NOW), bisect_left(times, W1)
    rest = RestServer(spot_rows(data), agg_path="/api/v3/aggTrades")
    rest.available_until = ids[now_i - 1]
    live_from, live_to = now_i - 50, bisect_left(times, W1 + 60_000)  # to the minute's end

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[live_from:live_to])
        await hold(ws)

    with WsServer([session]) as ws_server, rest:
        opts = options(ws_server, rest, fill_max_requests=budget)
        connector = run(BINANCE, "BTCUSDT", settings, ws_server, opts,
                        reached("BTCUSDT", ids[live_to - 1]))  # fmt: skip

    got = records(settings, b"binance:BTCUSDT")
    if budget == 4:
        assert got[0] == Since("binance", "BTCUSDT", W1)
        assert [int(t.id) for t in got[1:]] == ids[w1_i:live_to]  # type: ignore[union-attr]
        assert len(rest.requests) == 4
        assert rest.requests[2][1]["startTime"] == str(W1)  # 5m tried, then 1m
        minute = [expected_trade("binance", d) for d in data if W1 <= d["T"] < W1 + 60_000]
        trades = [t for t in got[1:] if isinstance(t, Trade) and t.ts_ms < W1 + 60_000]
        assert reference_bars(trades, "1m") == reference_bars(minute, "1m")
    else:
        assert all(isinstance(r, Trade) for r in got)
        assert [int(t.id) for t in got] == ids[live_from:live_to]  # type: ignore[union-attr]
        assert connector.stats().filled == 0 and len(rest.requests) == 2


def test_binance_usdm_fills_from_agg_trades(settings: Settings) -> None:
    """USDⓈ-M ids are aggTrade ids: the fill finds the window's first one by time and pages
    ``/fapi/v1/aggTrades`` by id. (The capture's @trade events, all MARKET fills, stand in as
    one-trade aggregates.)"""
    _, data = capture("usdm_btcusdt_20240808.gz")
    agg = [{"e": "aggTrade", "E": d["E"], "s": d["s"], "a": d["t"], "p": d["p"], "q": d["q"],
            "f": d["t"], "l": d["t"], "T": d["T"], "m": d["m"]} for d in data]  # fmt: skip
    frames = [orjson.dumps({"stream": "btcusdt@aggTrade", "data": a}).decode() for a in agg]
    rows = [{k: a[k] for k in ("a", "p", "q", "f", "l", "T", "m")} for a in agg]
    ids, times = [a["a"] for a in agg], [a["T"] for a in agg]
    now_i, w5_i = bisect_left(times, NOW), bisect_left(times, W5)
    end_i = bisect_left(times, END)
    rest = RestServer(rows, path="/fapi/v1/aggTrades", id_field="a", time_field="T")
    rest.available_until = ids[now_i - 1]

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[now_i - 10 : end_i])
        await hold(ws)

    with WsServer([session]) as ws_server, rest:
        connector = run(BINANCE_USDM, "BTCUSDT", settings, ws_server, options(ws_server, rest),
                        reached("BTCUSDT", ids[end_i - 1]))  # fmt: skip

    got = records(settings, b"binance-usdm:BTCUSDT")
    assert got[0] == Since("binance-usdm", "BTCUSDT", W5)
    assert fields(got[1:]) == fields(
        [expected_trade("binance-usdm", a, "a") for a in agg[w5_i:end_i]]
    )
    assert set(rest.paths) == {"/fapi/v1/aggTrades"}
    assert summary(connector.stats()) == (now_i - w5_i, 10, 0, 0)
    window = [expected_trade("binance-usdm", a, "a") for a in agg[w5_i:end_i]]
    assert bars(got[1:], W5, END) == bars(window, W5, END)  # type: ignore[arg-type]


def coinbase_matches() -> list[dict[str, Any]]:
    """The recorded SKL-USD matches (Coinbase Exchange, 2021-04-17 16:43:37 → 16:44:06)."""
    out = []
    for line in (FIXTURES / "cryptofeed" / "COINBASE.ws.28.0").read_text().splitlines()[1:]:
        head, sep, text = line.partition(": ")
        if sep and " <- " not in head and '"type":"match"' in text and '"SKL-USD"' in text:
            out.append(orjson.loads(text))
    return out


def test_coinbase_fills_by_walking_back_from_the_newest_trade(settings: Settings) -> None:
    """Coinbase has no trade-by-time query: the fill walks back by the ``after`` cursor (pages
    of 5 here) until a trade before the window start — the proof that it has every later one —
    and publishes the window's trades oldest first before the live ones."""
    from connectors.coinbase import iso_to_ms

    matches = coinbase_matches()
    ids = [m["trade_id"] for m in matches]
    assert ids == list(range(ids[0], ids[0] + len(ids)))  # gap-free recording
    times = [iso_to_ms(m["time"]) for m in matches]
    now = times[0] - times[0] % 60_000 + 60_000 + 4_000  # 16:44:04
    start = now - now % 60_000
    now_i, start_i = bisect_left(times, now), bisect_left(times, start)
    assert now_i - start_i > 10 and start_i > 0  # several pages inside the window
    rest = CoinbaseRest(
        [{k: m[k] for k in ("trade_id", "price", "size", "side", "time")} for m in matches]
    )
    rest.available_until = ids[now_i - 1]
    rest.max_limit = 5
    frames = [orjson.dumps(m).decode() for m in matches]

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[now_i - 3 :])
        await hold(ws)

    with WsServer([session], expect_subscribe=True) as ws_server, rest:
        opts = options(ws_server, rest, fill_intervals=("1m",), clock_ms=lambda: now)
        connector = run(COINBASE, "SKL-USD", settings, ws_server, opts,
                        reached("SKLUSD", ids[-1]))  # fmt: skip

    got = records(settings, b"coinbase:SKLUSD")
    assert got[0] == Since("coinbase", "SKLUSD", start)
    trades = [t for t in got[1:] if isinstance(t, Trade)]
    assert len(trades) == len(got) - 1
    assert [int(t.id) for t in trades] == ids[start_i:]
    # Coinbase's `side` is the maker's: the aggressor is the other side, over REST too.
    assert [t.side for t in trades] == [
        "buy" if m["side"] == "sell" else "sell" for m in matches[start_i:]
    ]
    assert summary(connector.stats()) == (now_i - start_i, 3, 0, 0)
    assert all("after" in q for _, q, _ in rest.requests[1:])  # paged back by the cursor
    built = [
        Trade.build(venue="coinbase", symbol="SKLUSD", id=m["trade_id"], price=m["price"],
                    qty=m["size"], side="buy" if m["side"] == "sell" else "sell", ts_ms=t)
        for m, t in zip(matches, times, strict=True)
        if t >= start
    ]  # fmt: skip
    assert reference_bars(trades, "1m") == reference_bars(built, "1m")


# --------------------------------------------------------------------------- bad answers


def _page_rewrite(rest: RestServer, change: Callable[[int, list[dict[str, Any]]], Any]) -> None:
    """Answer the n-th historicalTrades page (from 1) through ``change(n, rows)``, which returns
    new rows (or bytes: the body as is)."""
    pages = [0]

    def hook(path: str, query: dict[str, str]) -> tuple[int, bytes, dict[str, str]] | None:
        if path != rest.path:
            return None
        pages[0] += 1
        status, body, headers = rest.answer(path, query)
        new = change(pages[0], orjson.loads(body))
        return status, new if isinstance(new, bytes) else orjson.dumps(new), headers

    rest.hook = hook


def _faulty_fill(
    settings: Settings, setup: Callable[[RestServer, list[int]], None], live_len: int = 200
) -> tuple[LiveConnector, list[Trade | Since | Gap], list[DeadLetter], RestServer, list[int]]:
    """The spot fill of 23:55:00 → 23:57:30 against a REST server that ``setup`` breaks, then
    live trades from 50 before the seam."""
    frames, data = spot()
    ids, times = [d["t"] for d in data], [d["T"] for d in data]
    now_i = bisect_left(times, NOW)
    rest = RestServer(spot_rows(data), agg_path="/api/v3/aggTrades")
    rest.available_until = ids[now_i - 1]
    setup(rest, ids)
    live_to = now_i + live_len

    async def session(ws: ServerConnection, server: WsServer) -> None:
        await send_all(ws, frames[now_i - 50 : live_to])
        await hold(ws)

    with WsServer([session]) as ws_server, rest:
        connector = run(BINANCE, "BTCUSDT", settings, ws_server, options(ws_server, rest),
                        reached("BTCUSDT", ids[live_to - 1]))  # fmt: skip
    return connector, records(settings, b"binance:BTCUSDT"), letters(settings), rest, ids


def _window_ids(ids: list[int], live_len: int = 200) -> list[int]:
    _, data = spot()
    times = [d["T"] for d in data]
    return ids[bisect_left(times, W5) : bisect_left(times, NOW) + live_len]


def test_a_page_that_is_not_json_is_dead_lettered_and_its_trades_become_a_gap_marker(
    settings: Settings,
) -> None:
    """The second page answers HTML: dead-lettered (``json``), and the trades the fill claimed
    but could not fetch are a Gap marker from the last one it published to the seam. Live
    trades after the last published one are kept; the id logic backfills the rest once REST
    answers again, so the log ends complete — the marker stays (it says "may be missing")."""
    _, data = spot()
    times = [d["T"] for d in data]
    w5_i, now_i = bisect_left(times, W5), bisect_left(times, NOW)
    _page_rewrite_once = {"done": False}

    def setup(rest: RestServer, ids: list[int]) -> None:
        def change(n: int, rows: list[dict[str, Any]]) -> Any:
            if n == 2 and not _page_rewrite_once["done"]:
                _page_rewrite_once["done"] = True
                return b"<html>502 Bad Gateway</html>"
            return rows

        _page_rewrite(rest, change)

    connector, got, dead, _, ids = _faulty_fill(settings, setup)
    assert got[0] == Since("binance", "BTCUSDT", W5)
    gaps = [r for r in got if isinstance(r, Gap)]
    assert gaps == [Gap("binance", "BTCUSDT", times[w5_i + 999], times[now_i - 1] + 1)]
    assert got.index(gaps[0]) == 1001  # right after the first page's 1,000 trades
    assert [int(r.id) for r in got if isinstance(r, Trade)] == _window_ids(ids)
    assert [d.reason for d in dead] == ["json"]
    assert dead[0].source["stream"].endswith("/api/v3/historicalTrades")
    stats = connector.stats()
    assert (stats.filled, stats.unrecovered, stats.rest_rejected) == (1000, 1, 1)
    assert stats.backfilled == (now_i - 50) - (w5_i + 1000)  # the rest, before the live ones


def test_rows_the_parser_refuses_are_dead_lettered_and_leave_gap_markers(
    settings: Settings,
) -> None:
    """Two rows of the first page are broken (a price ``"abc"``, an id ``"x"``): each is
    dead-lettered with the parser's reason, every other trade is published, and the two missing
    trades are Gap markers between their neighbours — never a claim of completeness without
    them."""
    _, data = spot()
    times = [d["T"] for d in data]
    w5_i = bisect_left(times, W5)
    bad = {data[w5_i + 10]["t"]: ("price", "abc"), data[w5_i + 500]["t"]: ("id", "x")}

    def setup(rest: RestServer, ids: list[int]) -> None:
        def change(n: int, rows: list[dict[str, Any]]) -> Any:
            return [{**r, bad[r["id"]][0]: bad[r["id"]][1]} if r["id"] in bad else r for r in rows]

        _page_rewrite(rest, change)

    connector, got, dead, _, ids = _faulty_fill(settings, setup)
    assert got[0] == Since("binance", "BTCUSDT", W5)
    assert [r for r in got if isinstance(r, Gap)] == [
        Gap("binance", "BTCUSDT", times[w5_i + 9], times[w5_i + 11] + 1),
        Gap("binance", "BTCUSDT", times[w5_i + 499], times[w5_i + 501] + 1),
    ]
    assert [int(r.id) for r in got if isinstance(r, Trade)] == [
        i for i in _window_ids(ids) if i not in bad
    ]
    assert sorted(d.reason for d in dead) == ["bad_decimal", "bad_type"]
    assert connector.stats().unrecovered == 2 and connector.stats().rest_rejected == 2


def test_trades_outside_the_asked_range_or_out_of_order_are_refused_or_sorted(
    settings: Settings,
) -> None:
    """Every page comes shuffled, with three trades from before ``fromId`` mixed in: the extra
    ones are dead-lettered ``out_of_range``, the rest put in id order — the fill is complete,
    no Gap marker."""

    def setup(rest: RestServer, ids: list[int]) -> None:
        def change(n: int, rows: list[dict[str, Any]]) -> Any:
            first = ids.index(rows[0]["id"])
            extra = spot_rows(spot()[1][first - 3 : first])
            return list(reversed(rows)) + extra

        _page_rewrite(rest, change)

    connector, got, dead, _, ids = _faulty_fill(settings, setup)
    assert got[0] == Since("binance", "BTCUSDT", W5)
    assert all(isinstance(r, Trade) for r in got[1:])
    assert [int(r.id) for r in got[1:]] == _window_ids(ids)  # type: ignore[union-attr]
    assert [d.reason for d in dead] == ["out_of_range"] * 9  # 3 pages × 3
    assert connector.stats().unrecovered == 0


@pytest.mark.parametrize("status", [429, 503])
def test_a_rate_limit_or_a_server_error_is_waited_out(settings: Settings, status: int) -> None:
    """HTTP 429 (Retry-After honoured) or 503 (retried with backoff) on the fill's first
    request: the fill goes on and is complete."""

    def setup(rest: RestServer, ids: list[int]) -> None:
        if status == 429:
            rest.rate_limited = 1
            return
        calls = [0]

        def hook(path: str, query: dict[str, str]) -> tuple[int, bytes, dict[str, str]] | None:
            calls[0] += 1
            return (503, b"Service Unavailable", {}) if calls[0] == 1 else None

        rest.hook = hook

    _, got, dead, rest, ids = _faulty_fill(settings, setup)
    assert got[0] == Since("binance", "BTCUSDT", W5)
    assert [int(r.id) for r in got[1:]] == _window_ids(ids)  # type: ignore[union-attr]
    assert [s for _, _, s in rest.requests[:2]] == [status, 200] and dead == []


def test_a_banned_ip_fills_nothing_claims_nothing_and_live_trades_flow(settings: Settings) -> None:
    """HTTP 418: no Since marker, no filled trade, REST off for the process; the live trades
    are published as they come (the first window is partial)."""

    def setup(rest: RestServer, ids: list[int]) -> None:
        rest.banned = True

    connector, got, dead, rest, ids = _faulty_fill(settings, setup)
    _, data = spot()
    now_i = bisect_left([d["T"] for d in data], NOW)
    assert all(isinstance(r, Trade) for r in got)
    assert [int(r.id) for r in got] == ids[now_i - 50 : now_i + 200]  # type: ignore[union-attr]
    assert connector.rest is None and len(rest.requests) == 1
    assert connector.stats().filled == 0 and dead == []


def test_a_time_probe_that_contradicts_the_question_claims_nothing(settings: Settings) -> None:
    """Asked for the first trade from 23:55:00, the server answers one from before it: the
    answer is dead-lettered ``out_of_range`` and nothing is claimed or filled."""

    def setup(rest: RestServer, ids: list[int]) -> None:
        def hook(path: str, query: dict[str, str]) -> tuple[int, bytes, dict[str, str]] | None:
            if "startTime" not in query:
                return None
            early = {**query, "startTime": str(int(query["startTime"]) - 60_000)}
            return rest.answer(path, early)

        rest.hook = hook

    connector, got, dead, *_ = _faulty_fill(settings, setup)
    assert all(isinstance(r, Trade) for r in got)
    assert connector.stats().filled == 0
    assert [d.reason for d in dead] == ["out_of_range"]
