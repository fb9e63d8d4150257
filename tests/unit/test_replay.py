"""Replay readers: recorded Binance traffic and our own trade files, with injected garbage.

Expected values come from the recordings read here with plain ``gzip``/``json``/``csv``, and
from the fixture manifest; temporary files are written under ``tmp_path``.
"""

from __future__ import annotations

import csv
import gzip
import json
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from candlewax.codec import REASONS, DeadLetter, Heartbeat, Trade, encode_trades
from candlewax.errors import ConfigError
from connectors.publish import shift_trade
from connectors.replay import (
    TRADE_COLUMNS,
    ReplayItem,
    detect_format,
    iter_file,
)

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
HFT = FIXTURES / "hftbacktest"
CRYPTOFEED = FIXTURES / "cryptofeed"
SPOT = HFT / "spot_btcusdt_20240808.gz"


@cache
def spot_items() -> tuple[ReplayItem, ...]:
    return tuple(iter_file(SPOT))


@cache
def spot_trades() -> tuple[Trade, ...]:
    return tuple(t for item in spot_items() for t in item.trades)


def collect(items: Any) -> tuple[list[Trade], list[DeadLetter]]:
    trades: list[Trade] = []
    rejected: list[DeadLetter] = []
    for item in items:
        assert isinstance(item, ReplayItem)
        trades.extend(item.trades)
        rejected.extend(item.rejected)
    return trades, rejected


# --------------------------------------------------------------------------- hftbacktest


def test_spot_recording_replays_every_trade_with_its_receive_time() -> None:
    expected = []  # (recv_ms, id, T) of each @trade line, read independently
    with gzip.open(SPOT, "rb") as stream:
        for line in stream:
            stamp, _, raw = line.partition(b" ")
            obj = json.loads(raw)
            if obj.get("stream") == "btcusdt@trade":
                expected.append((int(stamp) // 1_000_000, obj["data"]["t"], obj["data"]["T"]))
    items = spot_items()
    assert all(not item.rejected for item in items)
    assert all(len(item.trades) == 1 for item in items)  # one trade frame, one item
    got = [(item.recv_ms, int(item.trades[0].id), item.trades[0].ts_ms) for item in items]
    assert got == expected
    assert len(got) == 9757
    assert (got[0][1], got[-1][1]) == (3735683259, 3735693015)
    assert all(t.recv_ms == item.recv_ms for item in items for t in item.trades)


@pytest.mark.parametrize(
    ("name", "venue", "symbol", "count"),
    [
        ("spot_btcusdt_20240808.gz", "binance", "BTCUSDT", 9757),
        ("spot_ethusdt_20240808.gz", "binance", "ETHUSDT", 6106),
        ("usdm_btcusdt_20240808.gz", "binance-usdm", "BTCUSDT", 21313),
        ("cm_btcusd_perp_20240808.gz", "binance-coinm", "BTCUSDPERP", 2286),
    ],
)
def test_hftbacktest_venue_comes_from_the_file_name(
    name: str, venue: str, symbol: str, count: int
) -> None:
    path = HFT / name
    assert detect_format(path) == "hftbacktest"
    trades, rejected = collect(iter_file(path))
    assert rejected == []
    assert len(trades) == count
    assert {(t.venue, t.symbol) for t in trades} == {(venue, symbol)}
    ids = [int(t.id) for t in trades]
    assert ids == list(range(ids[0], ids[0] + count))


def _with_garbage(tmp_path: Path, name: str) -> tuple[Path, dict[int, str], int]:
    """The first 3,000 lines of the spot recording with garbage lines spliced in.

    Returns the file, {line number: expected reason}, and the number of good trades.
    """
    with gzip.open(SPOT, "rb") as stream:
        lines = [next(stream) for _ in range(3000)]
    good = sum(1 for line in lines if b'"stream":"btcusdt@trade"' in line)
    trade = json.loads(next(line for line in lines if b"@trade" in line).split(b" ", 1)[1])
    no_price = {**trade, "data": {k: v for k, v in trade["data"].items() if k != "p"}}
    negative = {**trade, "data": {**trade["data"], "p": "-61837.63000000"}}
    seconds = {**trade, "data": {**trade["data"], "T": trade["data"]["T"] // 1000}}
    garbage = {
        5: (b"garbage without a timestamp\n", "bad_timestamp"),
        100: (b"1723161254087896568 {not json\n", "json"),
        101: (b"1723161254087896568 " + json.dumps(no_price).encode() + b"\n", "missing_field"),
        1500: (b"1723161254087896568 " + json.dumps(negative).encode() + b"\n", "non_positive"),
        2000: (b"1723161254087896568 " + json.dumps(seconds).encode() + b"\n", "bad_timestamp"),
        2500: (b"1723161254087896568 [1, 2, 3]\n", "venue_frame"),
        2600: (b"1723161254087896568 \xff\xfe\xfd\n", "json"),
    }
    out: list[bytes] = []
    expected: dict[int, str] = {}
    for line in lines:
        while len(out) + 1 in garbage:
            number = len(out) + 1
            out.append(garbage[number][0])
            expected[number] = garbage[number][1]
        out.append(line)
    path = tmp_path / name
    with gzip.open(path, "wb") as stream:
        stream.writelines(out)
    return path, expected, good


def test_garbage_lines_are_rejected_with_their_line_and_good_trades_still_come(
    tmp_path: Path,
) -> None:
    path, expected, good = _with_garbage(tmp_path, "spot_btcusdt_garbage.gz")
    trades, rejected = collect(iter_file(path))
    assert len(trades) == good
    assert [t.id for t in trades] == [t.id for t in spot_trades()[:good]]
    assert {d.source["line"]: d.reason for d in rejected} == expected
    for dead in rejected:
        assert dead.source == {"file": str(path), "line": dead.source["line"]}
        assert dead.reason in REASONS
        assert dead.raw  # the raw line travels with the dead letter
        DeadLetter.decode(dead.encode())  # and survives the wire, invalid UTF-8 included


def test_a_renamed_recording_needs_a_venue(tmp_path: Path) -> None:
    path, _, good = _with_garbage(tmp_path, "recording.gz")
    assert detect_format(path) == "hftbacktest"
    with pytest.raises(ConfigError, match="venue"):
        iter_file(path)
    trades, _ = collect(iter_file(path, venue="binance-us"))
    assert len(trades) == good and {t.venue for t in trades} == {"binance-us"}
    with pytest.raises(ConfigError, match="kraken"):
        iter_file(path, venue="kraken")


# --------------------------------------------------------------------------- cryptofeed


@pytest.mark.parametrize(
    ("name", "venue", "count"),
    [
        ("BINANCE.ws.1.0", "binance", 2),
        ("BINANCE_US.ws.1.0", "binance-us", 11),
        ("BINANCE_FUTURES.ws.1.0", "binance-usdm", 91),
        ("BINANCE_DELIVERY.ws.1.0", "binance-coinm", 51),
    ],
)
def test_cryptofeed_binance_captures(name: str, venue: str, count: int) -> None:
    path = CRYPTOFEED / name
    expected = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        stamp, _, raw = line.partition(": ")
        if number > 1 and '"e":"aggTrade"' in raw:
            data = json.loads(raw)["data"]
            recv_ms = int(Decimal(stamp) * 1000)  # floor of the receive time in ms
            expected.append((recv_ms, str(data["a"]), data["T"]))
    assert detect_format(path) == "cryptofeed"
    items = list(iter_file(path))
    got = [(item.recv_ms, t.id, t.ts_ms) for item in items for t in item.trades]
    assert got == expected
    assert len(got) == count
    assert {t.venue for item in items for t in item.trades} == {venue}
    assert all(not item.rejected for item in items)


@pytest.mark.parametrize(
    "name",
    ["OKX.ws.1.0", "COINBASE.ws.28.0", "KRAKEN.ws.48.0", "BYBIT.ws.25.0"],
)
def test_other_cryptofeed_venues_are_a_configuration_error(name: str) -> None:
    with pytest.raises(ConfigError, match=r"only Binance"):
        iter_file(CRYPTOFEED / name)
    with pytest.raises(ConfigError, match=r"only Binance"):
        iter_file(CRYPTOFEED / name, venue="binance")


def test_cryptofeed_client_lines_are_skipped_and_bad_lines_rejected(tmp_path: Path) -> None:
    lines = (CRYPTOFEED / "BINANCE_FUTURES.ws.1.0").read_bytes().splitlines(keepends=True)
    url = lines[0].split(b" <-> ")[0]
    sent = url + b' <- 1626992740.2: {"method":"SUBSCRIBE","params":["x@trade"],"id":1}\n'
    ack = b'1626992740.3: {"result":null,"id":1}\n'
    broken = b"1626992740.4 no colon here\n"
    reconnect = url + b" <-> 1626992750.0\n"
    path = tmp_path / "BINANCE_FUTURES.ws.9.0"
    path.write_bytes(
        b"".join([lines[0], sent, ack, broken, *lines[1:200], reconnect, *lines[200:]])
    )
    trades, rejected = collect(iter_file(path))
    assert len(trades) == 91
    assert [(d.source["line"], d.reason) for d in rejected] == [(4, "bad_timestamp")]


# --------------------------------------------------------------------------- ndjson


def test_ndjson_round_trip_objects_arrays_heartbeats_and_garbage(tmp_path: Path) -> None:
    trades = list(spot_trades()[:600])
    lines = []
    for trade in trades[:300]:
        lines.append(trade.encode())
    for start in range(300, 600, 30):  # batched messages: arrays of 30 trades
        lines.append(encode_trades(trades[start : start + 30]))
    lines.insert(10, Heartbeat("binance", trades[9].ts_ms).encode())  # line 11
    lines.insert(20, b"{oops")  # line 21
    bad = {**trades[0].to_dict(), "side": "long"}
    lines.insert(30, orjson.dumps([trades[29].to_dict(), bad]))  # line 31, one good one bad
    lines.insert(40, b"")  # a blank line is no message
    for name, opener in [("trades.jsonl", open), ("trades.ndjson.gz", gzip.open)]:
        path = tmp_path / name
        with opener(path, "wb") as stream:
            stream.write(b"\n".join(lines) + b"\n")
        assert detect_format(path) == "ndjson"
        items = list(iter_file(path))
        got, rejected = collect(items)
        assert got == [*trades[:28], trades[29], *trades[28:]]  # line 31 came before 28
        assert [(d.source["line"], d.reason) for d in rejected] == [(21, "json"), (31, "bad_side")]
        # The whole line, and which item of it was bad (its neighbours were kept).
        assert rejected[1].raw == lines[30] and rejected[1].source["index"] == 1
        for item in items:
            if item.trades:
                assert item.recv_ms == max(t.recv_ms or t.ts_ms for t in item.trades)


def test_ndjson_recv_ms_falls_back_to_ts_ms_and_venue_fills_gaps(tmp_path: Path) -> None:
    path = tmp_path / "bare.jsonl"
    row = {"symbol": "BTCUSDT", "id": 1, "price": "1.5", "qty": "2", "ts_ms": 1723161255342}
    path.write_bytes(orjson.dumps(row) + b"\n")
    (item,) = iter_file(path, venue="binance")
    assert item.recv_ms == 1723161255342
    assert item.trades[0].venue == "binance" and item.trades[0].recv_ms is None
    (item,) = iter_file(path)
    assert item.trades == [] and item.rejected[0].reason == "missing_field"


# --------------------------------------------------------------------------- csv


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(header)
        writer.writerows(rows)


def test_csv_round_trip_keeps_price_text_and_rejects_bad_rows(tmp_path: Path) -> None:
    trades = list(spot_trades()[:500])
    rows = [
        ["" if t.to_dict()[c] is None else str(t.to_dict()[c]) for c in TRADE_COLUMNS]
        for t in trades
    ]
    bad_price = [*rows[0]]
    bad_price[TRADE_COLUMNS.index("price")] = "61837,63"
    rows.insert(49, bad_price)  # file line 51 (the header is line 1)
    rows.insert(99, rows[1][:5])  # line 101: a short row
    rows.insert(150, ["", "", "", "", "", "", "", "", ""])  # a blank row is no trade
    path = tmp_path / "trades.csv"
    _write_csv(path, list(TRADE_COLUMNS), rows)
    assert detect_format(path) == "csv"
    got, rejected = collect(iter_file(path))
    assert got == trades
    assert got[0].price == "61837.63000000"  # the text, not a number
    assert [(d.source["line"], d.reason) for d in rejected] == [
        (51, "bad_decimal"),
        (101, "missing_field"),
    ]
    assert b'"61837,63"' in rejected[0].raw  # the row as it was in the file


def test_csv_without_venue_column_needs_a_venue(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    _write_csv(
        path,
        ["symbol", "id", "price", "qty", "ts_ms"],
        [["ETHUSDT", "7", "2.5", "1", "1723161255342"]],
    )
    with pytest.raises(ConfigError, match="venue"):
        iter_file(path)
    (item,) = iter_file(path, venue="binance")
    assert item.trades == [Trade("binance", "ETHUSDT", "7", "2.5", "1", None, 1723161255342)]
    missing = tmp_path / "missing.csv"
    _write_csv(missing, ["venue", "symbol", "id", "price", "ts_ms"], [])
    with pytest.raises(ConfigError, match="qty"):
        iter_file(missing)


# --------------------------------------------------------------------------- parquet


def _trade_table(trades: list[Trade], price_type: pa.DataType | None) -> pa.Table:
    columns: dict[str, Any] = {c: [t.to_dict()[c] for t in trades] for c in TRADE_COLUMNS}
    if price_type is None:
        return pa.table(columns)
    for name in ("price", "qty"):
        values = columns[name]
        if pa.types.is_decimal(price_type):
            columns[name] = pa.array([Decimal(v) for v in values], price_type)
        else:
            columns[name] = pa.array([float(v) for v in values], price_type)
    return pa.table(columns)


def test_parquet_with_string_or_decimal_prices_round_trips_exactly(tmp_path: Path) -> None:
    trades = list(spot_trades()[:3000])
    for label, kind in [("str", None), ("dec", pa.decimal128(18, 8))]:
        path = tmp_path / f"trades_{label}.parquet"
        pq.write_table(_trade_table(trades, kind), path, row_group_size=1000)
        assert detect_format(path) == "parquet"
        got, rejected = collect(iter_file(path))
        assert rejected == []
        assert got == trades  # decimal128(18, 8) keeps the 8 decimals Binance sent


def test_parquet_float_prices_become_decimals_without_float_noise(tmp_path: Path) -> None:
    trades = list(spot_trades()[:2000])
    path = tmp_path / "trades_f64.parquet"
    pq.write_table(_trade_table(trades, pa.float64()), path)
    got, rejected = collect(iter_file(path))
    assert rejected == []
    for trade, back in zip(trades, got, strict=True):
        assert Decimal(back.price) == Decimal(trade.price)  # same value ...
        assert back.price == str(float(trade.price)).removesuffix(".0")  # ... shortest text
        assert Decimal(back.qty) == Decimal(trade.qty)
        assert (back.id, back.ts_ms, back.recv_ms, back.side) == (
            trade.id,
            trade.ts_ms,
            trade.recv_ms,
            trade.side,
        )
    base = {"venue": ["x"] * 3, "symbol": ["S"] * 3, "id": [1, 2, 3], "ts_ms": [1723161255342] * 3}
    path = tmp_path / "small.parquet"
    table = pa.table(
        {
            **base,
            "price": pa.array([0.1, 61828.01, None], pa.float32()),
            "qty": pa.array([1e-8, 1e8, 1.0], pa.float64()),
        }
    )
    pq.write_table(table, path)
    items = list(iter_file(path))
    assert [(t.price, t.qty) for item in items for t in item.trades] == [
        ("0.1", "0.00000001"),
        ("61828.01", "100000000"),
    ]
    assert [(d.source["line"], d.reason) for item in items for d in item.rejected] == [
        (3, "missing_field")
    ]


def test_parquet_without_trade_columns_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(ConfigError, match="lacks the trade column"):
        iter_file(path)
    not_parquet = tmp_path / "fake.parquet"
    not_parquet.write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match="not a readable Parquet"):
        iter_file(not_parquet)


# --------------------------------------------------------------------------- misc


def test_detection_by_content_and_configuration_errors(tmp_path: Path) -> None:
    sniffed = tmp_path / "capture.bin"
    sniffed.write_bytes(b'{"v":1,"venue":"binance"}\n')
    assert detect_format(sniffed) == "ndjson"
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello\n")
    with pytest.raises(ConfigError, match="cannot tell the format"):
        iter_file(unknown)
    with pytest.raises(ConfigError, match="unknown replay format"):
        iter_file(unknown, fmt="xml")
    with pytest.raises(ConfigError, match="does not exist"):
        iter_file(tmp_path / "missing.gz")
    (item,) = iter_file(sniffed, venue="binance")
    assert item.rejected[0].reason == "missing_field"


def test_items_unpack_as_recv_trades_rejected() -> None:
    item = spot_items()[0]
    recv_ms, trades, rejected = item
    assert (recv_ms, trades, rejected) == (item.recv_ms, item.trades, item.rejected)


def test_iteration_is_lazy() -> None:
    items = iter_file(HFT / "usdm_btcusdt_20240808.gz")
    first = next(items)
    assert first.trades[0].id == "5266583935"
    items.close()  # type: ignore[attr-defined]


def test_shift_trade_moves_both_clocks() -> None:
    trade = spot_trades()[0]
    later = shift_trade(trade, 86_400_000)
    assert (later.ts_ms, later.recv_ms) == (trade.ts_ms + 86_400_000, trade.recv_ms + 86_400_000)
    assert (later.id, later.price, later.qty, later.side) == (
        trade.id,
        trade.price,
        trade.qty,
        trade.side,
    )
    unknown = Trade("binance", "BTCUSDT", "1", "1", "1", None, 1723161255342)
    assert shift_trade(unknown, -1000) == Trade(
        "binance", "BTCUSDT", "1", "1", "1", None, 1723161254342
    )


def test_csv_cells_with_control_characters_are_dead_letters(tmp_path: Path) -> None:
    """Found by the fuzz campaign: a timestamp cell ending in \\x1e passed a stripped check and
    then broke int(); now it is a dead letter and the file reads on."""
    path = tmp_path / "t.csv"
    path.write_text(
        "venue,symbol,id,price,qty,side,ts_ms\n"
        "binance,BTCUSDT,1,1.5,2,buy,1723161278455\x1e\n"
        "binance,BTCUSDT,2,1.5,2,buy, 1723161278456\t\n"
    )
    items = list(iter_file(path))
    assert [t.id for item in items for t in item.trades] == ["2"]
    assert [(d.source["line"], d.reason) for i in items for d in i.rejected] == [
        (2, "bad_timestamp")
    ]


def test_a_cryptofeed_line_with_a_huge_receive_time_is_a_dead_letter(tmp_path: Path) -> None:
    path = tmp_path / "BINANCE.ws.1.0"
    path.write_bytes(b"wss://stream.binance.com:9443 <-> 1633998524.0\n" + b"9" * 5000 + b": {}\n")
    (item,) = iter_file(path)
    assert [d.reason for d in item.rejected] == ["bad_timestamp"] and not item.trades
