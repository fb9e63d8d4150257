"""The gateway against the real broker and the real flow: trades, forming and closed klines,
tickers and alerts over real WebSocket connections, and the REST API, compared with an
independent Decimal computation and with the flow's own records."""

from __future__ import annotations

import base64
import dataclasses
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from decimal import ROUND_HALF_EVEN, Decimal
from functools import cache

import httpx
import orjson
import pytest
from bytewax.testing import run_main
from prometheus_client import REGISTRY

from candlewax.codec import Alert, Bar, Trade
from candlewax.settings import Settings
from connectors.producer import TradeProducer
from connectors.replay import iter_file
from flows.bars import build_flow
from tests.conftest import BTCUSDT_GZ
from tests.gateway_client import Reader, running_gateway
from tests.kafka_read import read_topic
from tests.reference import reference_bars, reference_range_alerts

pytestmark = pytest.mark.integration

#: Bar fields that are decimals, vwap last (Binance's klines have none).
DECIMALS = ("open", "high", "low", "close", "volume", "quote_volume", "buy_volume",
            "buy_quote_volume", "vwap")  # fmt: skip
RULES = {"range": {"1m": 0.001}, "move": {}, "zscore": {}, "cooldown_ms": 0}


@cache
def btcusdt() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(BTCUSDT_GZ) for t in item.trades)


def publish(settings: Settings, trades: list[Trade]) -> None:
    with TradeProducer(settings.connection, settings.topic("trades")) as producer:
        for i in range(0, len(trades), 200):
            producer.send(trades[i : i + 200])


def kline_fields(k: dict) -> dict:
    """A kline event's bar, as the flow's bar fields (Decimal where decimal)."""
    out = {
        "start_ms": k["t"],
        "end_ms": k["T"] + 1,
        "trades": k["n"],
        "first_id": None if k["f"] == -1 else str(k["f"]),
        "last_id": None if k["L"] == -1 else str(k["L"]),
    }
    names = {"o": "open", "h": "high", "l": "low", "c": "close", "v": "volume",
             "q": "quote_volume", "V": "buy_volume", "Q": "buy_quote_volume", "vwap": "vwap"}  # fmt: skip
    out.update({name: Decimal(k[short]) for short, name in names.items()})
    return out


def reference(trades: list[Trade], interval: str) -> dict:
    (bar,) = reference_bars(trades, interval)
    keep = ("start_ms", "end_ms", "trades", "first_id", "last_id", "open", "high", "low",
            "close", "volume", "quote_volume", "buy_volume", "buy_quote_volume", "vwap")  # fmt: skip
    return {k: bar[k] for k in keep}


def test_streams_carry_trades_forming_and_closed_bars_tickers_and_alerts(settings: Settings) -> None:  # fmt: skip
    trades = list(btcusdt())
    cut = len(trades) * 2 // 3
    first, rest = trades[:cut], trades[cut:]
    streams = "btcusdt@kline_1m/binance:btcusdt@kline_5m/binance:btcusdt@trade/binance:btcusdt@ticker/!alert"  # fmt: skip
    with (
        running_gateway(settings, push_interval_ms=100) as base,
        Reader(base.replace("http", "ws") + f"/stream?streams={streams}") as client,
    ):
        publish(settings, first)

        def of(stream: str) -> list[dict]:
            """The stream's events; trades merged into one message (a slow reader) unpacked."""
            out: list[dict] = []
            for m in client.messages:
                if m.get("stream") == stream:
                    out.extend(m["data"] if isinstance(m["data"], list) else [m["data"]])
            return out

        # Every trade, in order, with the venue's numbers.
        client.wait(lambda _: len(of("binance:btcusdt@trade")) >= len(first))
        got = of("binance:btcusdt@trade")
        assert [(str(m["t"]), m["p"], m["q"], m["T"], m["m"]) for m in got] == [
            (t.id, t.price, t.qty, t.ts_ms, t.side == "sell") for t in first
        ]
        # The forming bars of the newest 1m and 5m windows equal an independent computation
        # over the trades so far (no closed bar has come: the flow is not running yet).
        last = first[-1].ts_ms
        for stream, interval, length in (("btcusdt@kline_1m", "1m", 60_000), ("binance:btcusdt@kline_5m", "5m", 300_000)):  # fmt: skip
            window = [t for t in first if t.ts_ms - t.ts_ms % length == last - last % length]
            want = reference(window, interval)

            def forming(_: list, stream: str = stream, want: dict = want) -> dict | None:
                done = [m for m in of(stream) if m["k"]["n"] == want["trades"]]
                return done[-1] if done else None

            event = client.wait(forming)
            assert event["k"]["x"] is False and event["k"]["i"] == interval
            assert kline_fields(event["k"]) == want
        # The ticker: the day so far, from the same minutes.
        ticker = client.wait(lambda _: next((m for m in reversed(of("binance:btcusdt@ticker")) if m["n"] == len(first)), None))  # fmt: skip
        assert Decimal(ticker["o"]) == Decimal(first[0].price)
        assert Decimal(ticker["c"]) == Decimal(first[-1].price)
        assert Decimal(ticker["h"]) == max(Decimal(t.price) for t in first)
        assert Decimal(ticker["v"]) == sum(Decimal(t.qty) for t in first)
        change = (
            (Decimal(first[-1].price) - Decimal(first[0].price)) * 100 / Decimal(first[0].price)
        )
        assert Decimal(ticker["P"]) == change.quantize(Decimal("0.001"), ROUND_HALF_EVEN)

        # Now the rest, and the real flow over all of it: every closed bar on the streams is the
        # flow's bar on `bars`, field for field; every alert on `alerts` arrives on !alert.
        publish(settings, rest)
        run_main(build_flow(settings.replace(alerts=RULES)))
        bars = [Bar.decode(v) for *_, v in read_topic(settings.bootstrap_servers, settings.topic("bars"))]  # fmt: skip
        alerts = [Alert.decode(v) for *_, v in read_topic(settings.bootstrap_servers, settings.topic("alerts"))]  # fmt: skip
        assert alerts  # the capture moves more than 0.1 % in a minute
        for stream, interval in (("btcusdt@kline_1m", "1m"), ("binance:btcusdt@kline_5m", "5m")):
            flow = [b for b in bars if b.interval == interval]
            n = len(flow)
            client.wait(lambda _, s=stream, n=n: len([m for m in of(s) if m["k"]["x"]]) >= n)
            closed = [m for m in of(stream) if m["k"]["x"]]
            assert len(closed) == len(flow)
            for event, bar in zip(closed, flow, strict=True):
                k = event["k"]
                assert (event["s"], event["venue"], k["i"]) == (bar.symbol, bar.venue, interval)
                assert k["complete"] == bar.complete and k["gaps"] == bar.gaps
                plain = ("start_ms", "end_ms", "trades", "first_id", "last_id")
                assert kline_fields(k) == {
                    **{n: getattr(bar, n) for n in plain},
                    **{n: Decimal(getattr(bar, n)) for n in DECIMALS},
                }
                # ... and spelled exactly as the flow spells it.
                assert (k["o"], k["q"], k["vwap"]) == (bar.open, bar.quote_volume, bar.vwap)
        client.wait(lambda _: len(of("!alert")) >= len(alerts))
        assert [m["id"] for m in of("!alert")] == [a.id for a in alerts]
        want = reference_range_alerts(trades, "1m", Decimal("0.001"))
        assert [(m["window_start_ms"], m["ts_ms"]) for m in of("!alert")] == [(s, ts) for s, ts, _ in want]  # fmt: skip

        # REST: the flow's Parquet bars as Binance's arrays, equal to the reference.
        rows = httpx.get(f"{base}/api/v3/klines", params={"symbol": "BTCUSDT", "interval": "1m"}).json()  # fmt: skip
        ref = reference_bars(trades, "1m")
        assert [r[0] for r in rows] == [b["start_ms"] for b in ref]
        for row, b in zip(rows, ref, strict=True):
            assert row[6] == b["end_ms"] - 1 and row[8] == b["trades"] and row[11] == "0"
            assert [Decimal(x) for x in (*row[1:6], row[7], row[9], row[10])] == [
                b[n] for n in DECIMALS[:-1]
            ]
        assert orjson.loads(orjson.dumps(rows)) == rows
        got = httpx.get(f"{base}/api/v1/alerts", params={"symbol": "binance:BTCUSDT"}).json()
        assert [a["id"] for a in got] == [a.id for a in alerts]


def _stalled_client(base: str, path: str) -> socket.socket:
    """A client that completes the WebSocket handshake and then never reads again."""
    host, port = base.removeprefix("http://").split(":")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += s.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return s


def _disconnects(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("candlewax_gateway_disconnects_total", {"reason": reason}) or 0.0
    )


def test_a_stalled_client_is_dropped_and_the_others_get_everything(settings: Settings) -> None:
    """One client stops reading: its queue fills, it is disconnected as a slow client and
    counted; three fast clients on the same stream receive every trade, in order."""
    trades = [
        dataclasses.replace(t, id=str(int(t.id) + round_ * 10**10))
        for round_ in range(3)
        for t in btcusdt()
    ]
    before = _disconnects("slow_client")
    with running_gateway(settings, queue_size=40, ping_timeout_s=3.0) as base:
        ws = base.replace("http", "ws")
        stalled = _stalled_client(base, "/ws/binance:btcusdt@trade")
        fast = [Reader(f"{ws}/ws/binance:btcusdt@trade") for _ in range(2)]
        fast.append(Reader(f"{ws}/stream?streams=btcusdt@trade"))
        try:
            publish(settings, trades)
            with ThreadPoolExecutor(len(fast)) as pool:  # every fast client reads all the time
                got = list(pool.map(lambda c: c.wait(lambda ms: len(_flat(ms)) >= len(trades) and _flat(ms), 120), fast))  # fmt: skip
            for events in got:
                assert [e["t"] for e in events] == [int(t.id) for t in trades]

            def dropped(_: object) -> bool:
                # counted, and gone; the fast ones stay
                connections = httpx.get(f"{base}/healthz").json()["connections"]
                return _disconnects("slow_client") > before and connections == 3

            fast[0].wait(dropped, 30)
        finally:
            stalled.close()
            for client in fast:
                client.close()


def _flat(messages: list) -> list[dict]:
    out: list[dict] = []
    for m in messages:
        data = m.get("data", m) if isinstance(m, dict) else m
        out.extend(data if isinstance(data, list) else [data])
    return out


def test_klines_equal_the_exchange_s_own_for_fully_captured_minutes(settings: Settings) -> None:
    """A Binance-kline client reading /api/v3/klines gets Binance's own numbers: on the USD-M
    capture, for every symbol whose running kline's trades were all captured, the gateway's bar
    of that minute (forming, from the aggTrades up to the kline's last trade) equals the
    exchange's kline, field for field. Only the trade count differs in kind: Binance counts the
    trades inside each aggTrade, our bars count the aggTrades they were given."""
    from connectors.binance import parse_kline
    from tests.unit.test_binance import cryptofeed_messages, parse_frame

    aggs: dict[tuple[str, str], list[tuple[int, int, Trade]]] = {}
    snapshots: dict[tuple[str, str], dict] = {}
    klines: list[tuple[str, dict]] = []
    captures = [("BINANCE_FUTURES.ws.1.0", "binance-usdm"), ("BINANCE.ws.1.0", "binance"), ("BINANCE_US.ws.1.0", "binance-us")]  # fmt: skip
    for name, venue in captures:
        for _, raw in cryptofeed_messages(name):
            data = orjson.loads(raw)["data"]
            for trade in parse_frame(raw, venue=venue):
                aggs.setdefault((venue, trade.symbol), []).append((data["f"], data["l"], trade))
            kline = parse_kline(raw)
            if kline is not None:
                klines.append((venue, kline))
    for venue, kline in klines:  # in order: the newest fully captured one of each symbol stays
        key = (venue, kline["symbol"])
        first, last = int(kline["first_id"]), int(kline["last_id"])
        inside = {i for lo, hi, _ in aggs.get(key, []) if lo >= first and hi <= last for i in range(lo, hi + 1)}  # fmt: skip
        if first >= 0 and inside == set(range(first, last + 1)):
            snapshots[key] = kline
    assert {v for v, _ in snapshots} == {"binance-usdm", "binance", "binance-us"}
    published = [t for key, k in snapshots.items() for lo, hi, t in aggs[key] if hi <= int(k["last_id"])]  # fmt: skip
    with running_gateway(settings) as base:
        publish(settings, published)
        for (venue, symbol), k in snapshots.items():
            want = [k["start_ms"], k["open"], k["high"], k["low"], k["close"], k["volume"],
                    k["end_ms"] - 1, k["quote_volume"], None, k["buy_volume"], k["buy_quote_volume"], "0"]  # fmt: skip
            count = sum(1 for lo, hi, _ in aggs[(venue, symbol)] if int(k["first_id"]) <= lo and hi <= int(k["last_id"]))  # fmt: skip

            def row(
                _: object, market: str = f"{venue}:{symbol}", count: int = count
            ) -> list | None:
                params = {"symbol": market, "interval": "1m", "limit": 1}
                rows = httpx.get(f"{base}/api/v3/klines", params=params).json()
                return rows[-1] if rows and rows[-1][8] == count else None

            got = Reader.poll(row, 30)
            assert got[0] == want[0] and got[6] == want[6] and got[11] == "0"
            for i in (1, 2, 3, 4, 5, 7, 9, 10):
                assert Decimal(got[i]) == Decimal(want[i]), (symbol, i, got, want)


def test_the_private_user_stream_reaches_only_its_user(settings: Settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Records of user_events (what the notifier's gateway destinations write) reach the
    connections logged in as their user, and no one else; a wrong signature gets nothing."""
    import time as _time

    from candlewax.codec import UserEvent
    from candlewax.kafka import TrackedProducer
    from sinks.gateway.auth import key_hash, sign

    keys = tmp_path / "keys.toml"
    keys.write_text(f'desk-1 = "{key_hash("one")}"\ndesk-2 = "{key_hash("two")}"\n')
    alert = Alert.decode(orjson.dumps({
        "v": 1, "id": "5fddbb49fd7eb91198225183", "rule": "range", "venue": "binance",
        "symbol": "BTCUSDT", "interval": "1m", "window_start_ms": 1723161480000,
        "ts_ms": 1723161534124, "value": "0.00201078", "threshold": "0.002",
        "price": "61707.30000000", "severity": "warning", "text": "BTCUSDT 1m range",
    }))  # fmt: skip
    with running_gateway(settings, keys_file=keys) as base:
        ws = base.replace("http", "ws")
        clients = {}
        for user, secret in (("desk-1", "one"), ("desk-2", "two"), ("desk-2", "wrong")):
            c = Reader(f"{ws}/stream?streams=!alert")
            now = int(_time.time() * 1000)
            login = {"apiKey": user, "timestamp": now, "signature": sign(user, secret, now)}
            c.send({"method": "LOGIN", "params": login, "id": 1})
            ok = "result" in c.reply(1)
            c.send({"method": "SUBSCRIBE", "params": ["user"], "id": 2})
            assert ("result" in c.reply(2)) == ok == (secret != "wrong")
            clients[(user, secret)] = c
        producer = TrackedProducer(settings.connection)
        ts = alert.ts_ms + 100
        events = [
            UserEvent.of_alert("desk-1", alert, ts),
            UserEvent.of_delivery("desk-1", alert.id, "desk-telegram", "delivered", "", ts),
            UserEvent.of_delivery("desk-2", alert.id, "ops-wecom", "dead_lettered", "x_1", ts),
        ]
        for event in events:
            producer.send(settings.topic("user_events"), event.encode(), event.user.encode())
        producer.flush()

        def private(c: Reader) -> list[dict]:
            return [m["data"] for m in c.messages if m.get("stream") == "user"]

        one, two, wrong = clients.values()
        one.wait(lambda _: len(private(one)) >= 2)
        two.wait(lambda _: private(two))
        assert [m["e"] for m in private(one)] == ["alert", "delivery"]
        assert private(one)[0]["id"] == alert.id and private(one)[1]["outcome"] == "delivered"
        (got,) = private(two)
        assert (got["e"], got["channel"], got["outcome"]) == ("delivery", "ops-wecom", "dead_lettered")  # fmt: skip
        # The refused login: a public message published after the private ones arrives, and
        # nothing private came before it.
        producer.send(settings.topic("alerts"), alert.encode(), b"binance:BTCUSDT")
        producer.flush()
        wrong.wait(lambda ms: any(m.get("stream") == "!alert" for m in ms))
        assert private(wrong) == []
        one.wait(lambda ms: any(m.get("stream") == "!alert" for m in ms))
        assert len(private(one)) == 2  # desk-2's outcome never reached desk-1
        for c in clients.values():
            c.close()
