"""How the live connector plans connections (no network needed)."""

from __future__ import annotations

from connectors.binance import Binance
from connectors.live import LiveConnector, LiveOptions, _ConnectLimiter, redact
from connectors.venues import BINANCE


def test_symbols_are_split_across_connections_by_the_venue_limit() -> None:
    symbols = [f"SYM{i:04d}USDT" for i in range(450)]
    connector = LiveConnector(
        BINANCE, symbols, producer=None, options=LiveOptions(ws_url="ws://h:1")
    )  # type: ignore[arg-type]
    sizes = [len(c.symbols) for c in connector.connections]
    assert sizes == [200, 200, 50]
    assert [s for c in connector.connections for s in c.symbols] == symbols  # each exactly once
    first = connector.connections[0].url
    assert first.startswith("ws://h:1/stream?streams=sym0000usdt@trade/sym0001usdt@trade/")
    assert first.count("@trade") == 200


def test_connect_attempts_are_limited_per_five_minutes() -> None:
    limiter = _ConnectLimiter(3)
    assert [limiter.wait_time() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert 299 < limiter.wait_time() <= 300  # the 4th waits for the oldest to age out


def test_rotation_lifetime_is_jittered_below_the_venue_limit() -> None:
    lifetimes = {
        LiveConnector(BINANCE, ["BTCUSDT"], producer=None).connections[0].lifetime_s  # type: ignore[arg-type]
        for _ in range(20)
    }
    assert len(lifetimes) > 1  # not in lock-step
    assert all(0.9 * 24 * 3600 <= t <= 24 * 3600 for t in lifetimes if t is not None)


def test_logged_urls_carry_no_secrets() -> None:
    assert (
        redact("wss://user:pw@ws.finnhub.io:443/path?token=abc") == "wss://ws.finnhub.io:443/path"
    )


def _delays(healthy_after_s: float, failures: int) -> list[float]:
    """The waits the reconnect loop asks for after ``failures`` dropped sessions."""
    options = LiveOptions(
        ws_url="ws://h:1", backoff_initial_s=1.0, backoff_max_s=8.0, healthy_after_s=healthy_after_s
    )
    connector = LiveConnector(BINANCE, ["BTCUSDT"], producer=None, options=options)  # type: ignore[arg-type]
    conn = connector.connections[0]
    outcomes = iter(["dropped"] * failures + [None])
    conn._session = lambda: next(outcomes)  # type: ignore[method-assign]
    waits: list[float] = []

    def record(timeout: float | None = None) -> bool:
        waits.append(timeout or 0.0)
        return False

    connector.stop.wait = record  # type: ignore[method-assign]
    conn.run()
    return waits


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    waits = _delays(healthy_after_s=1e9, failures=6)
    steps = [1, 2, 4, 8, 8, 8]  # doubling from 1 s, capped at 8 s
    assert len(waits) == len(steps)
    assert all(0.5 * s <= w <= s for w, s in zip(waits, steps, strict=True))


def test_backoff_resets_after_a_healthy_connection() -> None:
    waits = _delays(healthy_after_s=0.0, failures=6)  # every session counts as healthy
    assert all(0.5 <= w <= 1.0 for w in waits)


def test_binance_control_labels() -> None:
    control = Binance().control
    assert control(b'{"result":null,"id":1}') == "subscribed"
    assert control(b'{"error":{"code":2,"msg":"Invalid request"},"id":1}') == "error"
    assert control(b'{"stream":"btcusdt@trade","data":{"e":"serverShutdown","E":1}}') == "reconnect"
    trade = b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1,"s":"BTCUSDT","t":1,"p":"1","q":"1","T":1,"m":true}}'
    assert control(trade) is None  # a trade, left to the parser
