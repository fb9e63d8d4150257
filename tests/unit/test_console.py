"""The demo's console board reads bars, trades and alerts through the codec: what it cannot
read is counted and skipped, and the board goes on."""

from __future__ import annotations

import dataclasses

from candlewax.codec import Alert, Bar, Trade, alert_id
from sinks.console import BarBoard

BAR = Bar("binance", "BTCUSDT", "1m", 1723161240000, 1723161300000, "61828.00000000",
          "61860.80000000", "61782.25000000", "61782.25000000", "15.07702000", "932148.06446410",
          "61825.74968158", 1255, "6.63029000", "409896.80935010", "1", "2")  # fmt: skip
HOSTILE = [b"", b"{not json", b'"' * 600_000, b"[" * 5000, b'{"v":1,"interval":"1m"}', b"\xff"]


def test_hostile_messages_are_counted_and_the_board_goes_on() -> None:
    board = BarBoard()
    for value in HOSTILE:
        board.add_bar(value)
        board.add_trades(value)
        board.add_alert(value)
    board.add_bar(BAR.encode())
    trade = Trade("binance", "ETHUSDT", "9", "2600.5", "0.5", "buy", 1723161250000)
    board.add_trades(trade.encode())
    alert = Alert(alert_id("range", "binance", "BTCUSDT", "1m", 1723161240000), "range", "binance",
                  "BTCUSDT", "1m", 1723161240000, 1723161250000, "0.006", "0.005", "61828",
                  "warning", "BTCUSDT\x1b[2J range")  # fmt: skip
    board.add_alert(alert.encode())
    assert board.unreadable == 3 * len(HOSTILE)
    assert (board.total(), board.trades, board.alerts) == (1, 1, 1)
    screen = board.render(["header"])
    assert "binance:BTCUSDT" in screen and "binance:ETHUSDT" in screen
    assert f"unreadable: {3 * len(HOSTILE)}" in screen
    assert "\x1b" not in screen  # an alert's free text cannot drive the terminal


def test_the_board_shows_the_flags_of_closed_bars() -> None:
    board = BarBoard()
    board.add_bar(dataclasses.replace(BAR, complete=False).encode())
    board.add_bar(dataclasses.replace(BAR, symbol="ETHUSDT", complete=False, gaps=2).encode())
    board.add_bar(dataclasses.replace(BAR, symbol="SOLUSDT").encode())
    lines = {line.split()[0]: line for line in board.render([]).splitlines()[3:]}
    assert lines["binance:BTCUSDT"].endswith(" partial")
    assert lines["binance:ETHUSDT"].endswith(" gaps=2")
    assert lines["binance:SOLUSDT"].rstrip().endswith("1255")  # complete: no flag
