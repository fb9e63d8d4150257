"""The replay's batch path (``iter_batches`` → ``publish``) against the per-trade path it replaced
(``iter_file`` → one Trade per trade → ``publish``), kept here as the reference: for the same
file and options both must ask the producer for the same messages — values, keys, timestamps,
partitions, in the same order —, the same dead letters (all but their wall-clock ``ts_ms``),
the same heartbeats, stats and metrics, and fail the same way where the file is damaged.

The producer under both is a recording stand-in for confluent-kafka's (no broker);
tests/integration/test_replay_batches.py compares the two on a real broker.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import threading
from collections.abc import Iterable, Iterator
from decimal import Decimal
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import REGISTRY

import candlewax.kafka
from candlewax.codec import (
    MAX_ARRAY_ITEMS,
    MAX_MESSAGE_BYTES,
    Gap,
    Heartbeat,
    ParseError,
    Since,
    Trade,
    decode_record,
    encode_trades,
)
from candlewax.codec.columns import FILE_TRADE, file_trades
from candlewax.codec.strictjson import loads
from candlewax.errors import ConfigError
from candlewax.kafka import Connection
from connectors.producer import TradeProducer
from connectors.publish import PublishStats, TradeBatch, publish
from connectors.replay import TRADE_COLUMNS, ReplayError, iter_batches, iter_file

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
HFT = FIXTURES / "hftbacktest"
CRYPTOFEED = FIXTURES / "cryptofeed"
SPOT = HFT / "spot_btcusdt_20240808.gz"
FINNHUB = FIXTURES / "derived" / "finnhub_envelope_from_binance_btcusdt_20240808.jsonl"
DEC = pa.decimal128(18, 8)
METRICS = (
    "candlewax_connector_trades_total",
    "candlewax_produced_messages_total",
    "candlewax_parse_errors_total",
)


class RecordingProducer:
    """Stands in for confluent_kafka.Producer: records every produce call (dead letters without
    their wall-clock ``ts_ms``) and reports each message delivered on the next poll."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.log: list[tuple[str, bytes, bytes | None, int, int]] = []
        self.pending: list[tuple[Any, str]] = []

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: str | bytes | None = None,
        partition: int = -1,
        callback: Any = None,
        on_delivery: Any = None,
        timestamp: int = 0,
        headers: Any = None,
    ) -> None:
        assert value is not None
        if isinstance(key, str):
            key = key.encode()
        if topic == "deadletter":
            letter = orjson.loads(value)
            del letter["ts_ms"]
            value = orjson.dumps(letter)
        self.log.append((topic, value, key, partition, timestamp))
        report = callback or on_delivery
        if report is not None:
            self.pending.append((report, topic))

    def poll(self, timeout: float = 0) -> int:
        pending, self.pending = self.pending, []
        for report, topic in pending:
            report(None, SimpleNamespace(topic=lambda topic=topic: topic))
        return len(pending)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0

    def list_topics(self, topic: str, timeout: float = 0) -> Any:
        partitions = {0: None, 1: None, 2: None}
        return SimpleNamespace(topics={topic: SimpleNamespace(error=None, partitions=partitions)})

    def __len__(self) -> int:
        return len(self.pending)


@pytest.fixture(autouse=True)
def recording(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(candlewax.kafka, "Producer", RecordingProducer)


def _metrics() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.name in METRICS:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def published(items: Iterable[Any], **options: Any) -> dict[str, Any]:
    """What publishing ``items`` asks of the producer, and what it counts."""
    before = _metrics()
    producer = TradeProducer(Connection("127.0.0.1:9"), "trades", "deadletter")
    outcome: dict[str, Any] = {}
    stats = PublishStats()
    try:
        publish(items, producer, stats=stats, **options)
    except ReplayError as exc:
        outcome["error"] = (str(exc), exc.line)
    producer.flush()
    after = _metrics()
    outcome["log"] = producer._producer._producer.log  # type: ignore[attr-defined]
    outcome["stats"] = stats
    outcome["counts"] = (producer.sent, producer.delivered, producer.failed)
    outcome["metrics"] = {k: v - before.get(k, 0.0) for k, v in after.items() if v != before.get(k)}
    return outcome


def per_trade(path: Path, **kwargs: Any) -> Iterator[Any]:
    """The reference: the file as items, one Trade object per trade."""
    return ((i.recv_ms, i.trades, i.rejected) for i in iter_file(path, **kwargs))


def assert_same(
    path: Path,
    venue: str | None = None,
    fmt: str | None = None,
    batch_lines: tuple[int, ...] = (16_384,),
    **options: Any,
) -> dict[str, Any]:
    want = published(per_trade(path, venue=venue, fmt=fmt), **options)
    for size in batch_lines:
        got = published(iter_batches(path, venue, fmt, batch_lines=size), **options)
        assert len(got["log"]) == len(want["log"]), size
        for index, (a, b) in enumerate(zip(got["log"], want["log"], strict=True)):
            assert a == b, (size, index)
        assert got == want, size
    return want


@cache
def spot_trades() -> tuple[Trade, ...]:
    return tuple(t for item in iter_file(SPOT) for t in item.trades)


def _write(path: Path, lines: list[bytes], end: bytes = b"\n") -> Path:
    data = b"\n".join(lines) + end
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


# --------------------------------------------------------------------------- real recordings


@pytest.mark.parametrize("name", sorted(p.name for p in HFT.glob("*.gz")))
def test_hftbacktest_recordings_publish_the_same_log(name: str) -> None:
    want = assert_same(HFT / name, batch_lines=(4096,))
    assert want["stats"].trades > 2000 and want["stats"].heartbeats > 100


@pytest.mark.parametrize(
    "options",
    [
        {"shift_ms": 86_400_000},
        {"shift_ms": -1_723_000_000_000},  # to 1970: times of other digit counts
        {"per_message": 20},
        {"per_message": 3, "shift_ms": 1},
        {"heartbeat_ms": 250},
        {"heartbeat_ms": 0},
        {"speed": 1e9},  # paced item by item (at this speed the waits are ~0)
    ],
    ids=str,
)
def test_options_keep_their_meaning(options: dict[str, Any]) -> None:
    assert_same(SPOT, batch_lines=(777,), **options)


@pytest.mark.parametrize("name", ["BINANCE.ws.1.0", "BINANCE_US.ws.1.0", "BINANCE_FUTURES.ws.1.0",
                                  "BINANCE_DELIVERY.ws.1.0"])  # fmt: skip
def test_cryptofeed_captures_publish_the_same_log(name: str) -> None:
    assert_same(CRYPTOFEED / name, batch_lines=(1, 50))


def test_an_ndjson_file_of_other_records_is_all_dead_letters() -> None:
    """The derived Finnhub file: real envelopes, none of them our trades."""
    want = assert_same(FINNHUB, batch_lines=(100, 16_384))
    assert want["stats"].trades == 0 and want["stats"].rejected == 932


# --------------------------------------------------------------------------- our NDJSON


def _canonical_lines() -> list[bytes]:
    trades = spot_trades()
    return [t.encode() for t in trades[:3000]]


def _hostile_lines() -> list[bytes]:
    """Real trades, and around them every kind of line the batch path must hand to the exact
    reading (valid or not) or read itself."""
    trades = spot_trades()
    t = trades[100].to_dict()
    as_text = json.dumps(t).encode()  # ", " and ": " separators: valid, not canonical
    lines = [trades[i].encode() for i in range(3000)]
    odd = [
        b"",  # blank
        b"   \t",
        trades[1].encode() + b"\r",  # CRLF file
        b"\xef\xbb\xbf" + trades[2].encode(),  # a BOM
        as_text,
        orjson.dumps({**t, "price": 61828.5}),  # JSON numbers: the file form converts them
        orjson.dumps({**t, "qty": 2}),
        orjson.dumps({**t, "id": 3735683259}),
        orjson.dumps({**t, "id": -5}),
        orjson.dumps({**t, "price": "61837.630000000000000000000"}),  # 27 decimals: valid
        orjson.dumps({**t, "price": "061837.63"}),
        orjson.dumps({**t, "price": "0"}),
        orjson.dumps({**t, "price": "0.000000001"}),  # below 1e-8
        orjson.dumps({**t, "price": "1e5"}),
        orjson.dumps({**t, "price": "99999999999999", "qty": "1"}),  # notional 1e14
        orjson.dumps({**t, "price": "9999999", "qty": "999999.9"}),  # just below 1e13
        orjson.dumps({**t, "price": "10000000", "qty": "1000000"}),  # exactly 1e13
        orjson.dumps({**t, "price": "1234567890123", "qty": "0.5"}),  # 13 digits
        orjson.dumps({**t, "price": "12345678901234", "qty": "0.1"}),  # 14 digits
        orjson.dumps({**t, "ts_ms": 946_684_800_000, "recv_ms": None}),  # the first valid ms
        orjson.dumps({**t, "ts_ms": 946_684_799_999}),
        orjson.dumps({**t, "ts_ms": 4_102_444_799_999, "recv_ms": 4_100_000_000_000}),
        orjson.dumps({**t, "ts_ms": 4_102_444_800_000}),
        orjson.dumps({**t, "ts_ms": 1_723_161_255}),  # seconds
        orjson.dumps({**t, "recv_ms": 999_999_999_999}),
        orjson.dumps({**t, "side": "BUY"}),
        orjson.dumps({**t, "side": None}),
        orjson.dumps({**t, "v": 2}),
        orjson.dumps({k: v for k, v in t.items() if k != "v"}),  # v may be absent in a file
        orjson.dumps({**t, "type": "trade"}),
        orjson.dumps({**t, "x": 1}),
        orjson.dumps({**t, "venue": ""}),
        orjson.dumps({k: v for k, v in t.items() if k != "venue"}),
        orjson.dumps({**t, "symbol": "btc/usdt"}),
        trades[3].encode().replace(b'"BTCUSDT"', b'"\\u0042TCUSDT"'),  # an escape: same text
        trades[4].encode()[:-1] + b',"ts_ms":1723161255342}',  # a member twice
        trades[5].encode()[:-1],  # cut
        trades[6].encode() + trades[7].encode(),
        b"\xff\xfe" + trades[8].encode(),
        b'"a string"',
        b"null",
        b"[]",
        b"[ ]",
        b"[[]]",
        b"[" + trades[9].encode() + b"]",
        encode_trades(list(trades[10:40])),
        b"[" + trades[41].encode() + b"," + orjson.dumps({**t, "side": "long"}) + b"]",
        b"[" + trades[42].encode() + b",]",
        b"[" + trades[43].encode() + b"," + b"]",
        b"[" + b",".join([trades[44].encode()] * (MAX_ARRAY_ITEMS + 1)) + b"]",  # too many
        b"[" + b",".join([trades[45].encode()] * 7_000) + b"]",  # > MAX_MESSAGE_BYTES
        b" " * (MAX_MESSAGE_BYTES + 10),  # oversize blank
        b'{"pad":"' + b"x" * (MAX_MESSAGE_BYTES + 10) + b'"}',  # oversize
        Heartbeat("binance", trades[50].ts_ms).encode(),
        Heartbeat("binance", 5).encode(),
        Since("binance", "BTCUSDT", trades[51].ts_ms).encode(),
        Gap("binance", "BTCUSDT", trades[52].ts_ms, trades[52].ts_ms + 10).encode(),
        orjson.dumps({"type": "heartbeat", "venue": "binance", "ts_ms": trades[53].ts_ms}),
        b'{"v":1,"venue":"okx","symbol":"BTCUSDT","id":"1","price":"2","qty":"3","side":null,'
        b'"ts_ms":1723161255342,"recv_ms":null}',  # a second venue
        b'{"v":1,"venue":"okx","symbol":"ETHUSDT","id":"2","price":"2","qty":"3","side":"buy",'
        b'"ts_ms":1723161290000,"recv_ms":1723161290001}',
    ]
    # Spread the odd lines through the file: at batch edges for small batches, mid-batch for
    # large ones.
    for index, line in enumerate(odd):
        lines.insert(7 + index * 41, line)
    return lines


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson.gz"])
def test_canonical_ndjson_is_published_as_written(tmp_path: Path, suffix: str) -> None:
    lines = _canonical_lines()
    path = _write(tmp_path / f"trades{suffix}", lines)
    want = assert_same(path, batch_lines=(1, 999, 16_384))
    assert [v for topic, v, *_ in want["log"] if topic == "trades" and b"heartbeat" not in v] == (
        lines
    )


@pytest.mark.parametrize("batch_lines", [1, 5, 41, 1000, 16_384])
def test_hostile_ndjson_gives_the_same_messages_and_dead_letters(
    tmp_path: Path, batch_lines: int
) -> None:
    path = _write(tmp_path / "hostile.jsonl", _hostile_lines(), end=b"")  # no final newline
    want = assert_same(path, batch_lines=(batch_lines,))
    assert want["stats"].rejected > 30 and want["stats"].trades > 3000
    reasons = {orjson.loads(v)["reason"] for topic, v, *_ in want["log"] if topic == "deadletter"}
    assert {"json", "too_large", "bad_decimal", "out_of_range", "bad_timestamp"} <= reasons


@pytest.mark.parametrize(
    "options",
    [{"per_message": 4}, {"shift_ms": 3_600_000}, {"heartbeat_ms": 50}, {"speed": 1e9}],
    ids=str,
)
def test_hostile_ndjson_with_options(tmp_path: Path, options: dict[str, Any]) -> None:
    path = _write(tmp_path / "hostile.ndjson", _hostile_lines())
    assert_same(path, batch_lines=(97,), **options)


def test_a_venue_fills_records_without_one(tmp_path: Path) -> None:
    rows = [
        {"symbol": "BTCUSDT", "id": 1, "price": "1.5", "qty": "2", "ts_ms": 1723161255342},
        {"venue": "", "symbol": "ETHUSDT", "id": "7", "price": "2.5", "qty": "1",
         "ts_ms": 1723161255343},
        {"venue": "okx", "symbol": "ETHUSDT", "id": "8", "price": "2.5", "qty": "1",
         "ts_ms": 1723161255344},
    ]  # fmt: skip
    path = _write(tmp_path / "bare.jsonl", [orjson.dumps(r) for r in rows] + _canonical_lines())
    for venue in (None, "binance-us"):
        assert_same(path, venue=venue, batch_lines=(2, 1000))


def test_truncated_and_corrupt_gzip_stop_at_the_same_line(tmp_path: Path) -> None:
    whole = gzip.compress(b"\n".join(_hostile_lines()) + b"\n")
    cuts = [len(whole) // 3, len(whole) - 9, len(whole) - 30_000]
    for number, cut in enumerate(cuts):
        path = tmp_path / f"cut{number}.jsonl.gz"
        path.write_bytes(whole[:cut])
        want = assert_same(path, batch_lines=(1, 500, 16_384))
        assert "error" in want and want["stats"].trades > 0, cut
    corrupt = bytearray(whole)
    corrupt[len(whole) // 2 : len(whole) // 2 + 64] = b"\x00" * 64
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(bytes(corrupt))
    want = assert_same(path, batch_lines=(3, 16_384))
    assert "error" in want


def test_an_empty_or_blank_file_publishes_nothing(tmp_path: Path) -> None:
    for name, data in [("empty.jsonl", b""), ("blank.jsonl", b"\n\n  \n"), ("nl.jsonl", b"\n")]:
        path = tmp_path / name
        path.write_bytes(data)
        assert published(iter_batches(path))["log"] == []
        assert_same(path)


def test_a_stopped_replay_publishes_nothing() -> None:
    stop = threading.Event()
    stop.set()
    assert published(iter_batches(SPOT), stop=stop)["log"] == []


def test_configuration_errors_come_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        iter_batches(tmp_path / "missing.jsonl")
    with pytest.raises(ConfigError, match="only Binance"):
        iter_batches(CRYPTOFEED / "OKX.ws.1.0")
    with pytest.raises(ValueError, match="batch_lines"):
        iter_batches(SPOT, batch_lines=0)


def test_closing_the_batches_early_stops_the_reader() -> None:
    batches = iter_batches(SPOT, batch_lines=100)
    first = next(batches)
    assert isinstance(first, TradeBatch) and len(first) == 100
    batches.close()  # type: ignore[attr-defined]
    assert not [t for t in threading.enumerate() if t.name == "replay-reader"]


# --------------------------------------------------------------------------- csv, parquet


def _csv_text(header: list[str], rows: list[list[str]], end: str = "\r\n") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=end)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _hostile_csv_rows() -> list[list[str]]:
    trades = list(spot_trades()[:2500])
    rows = [["" if v is None else str(v) for v in t.to_dict().values()] for t in trades]
    good = rows[0]

    def w(**cells: str) -> list[str]:
        return [cells.get(name, value) for name, value in zip(TRADE_COLUMNS, good, strict=True)]

    odd = [
        w(price="61837,63"),
        good[:5],  # short
        [*good, "x"],  # long
        [""] * len(TRADE_COLUMNS),  # blank
        [" "] * len(TRADE_COLUMNS),
        w(ts_ms=" 1723161255342\t"),  # spaces around a time: CSV style, valid
        w(ts_ms="01723161255342"),  # a leading zero: valid (an integer), not canonical
        w(ts_ms="+1723161255342"),
        w(ts_ms="1723161255342\x1e"),
        w(recv_ms=""),
        w(recv_ms=" "),
        w(v="01"),
        w(v=" 1"),
        w(v="2"),
        w(v=""),
        w(side=""),
        w(side="BUY"),
        w(side="null"),
        w(venue=""),
        w(venue=" binance"),
        w(symbol="BTC/USDT"),
        w(id=""),
        w(price="0"),
        w(price=" 61837.63"),
        w(qty="1e-3"),
        w(price="99999999999999", qty="1"),
        w(price="9999999", qty="999999.9"),
        w(id="line\nbreak"),  # a quoted cell over two lines: line numbers jump
        w(symbol="\ufffdBTC"),
        w(price='6"1'),
        w(symbol='BTCUSDT","x":"1'),  # an injection attempt: its own cell, refused
    ]
    for index, row in enumerate(odd):
        rows.insert(3 + index * 67, row)
    return rows


@pytest.mark.parametrize("batch_lines", [1, 50, 16_384])
def test_hostile_csv_gives_the_same_messages_and_dead_letters(
    tmp_path: Path, batch_lines: int
) -> None:
    path = tmp_path / "trades.csv"
    path.write_text(_csv_text(list(TRADE_COLUMNS), _hostile_csv_rows()))
    want = assert_same(path, batch_lines=(batch_lines,))
    assert want["stats"].rejected > 15 and want["stats"].trades > 2000


def test_csv_header_variants(tmp_path: Path) -> None:
    rows = _hostile_csv_rows()[:400]
    variants = {
        # venue given, no venue column; the type column; a column twice (the last counts); an
        # unknown column; columns in another order
        "novenue.csv": ([c for c in TRADE_COLUMNS if c != "venue"], 1, "binance"),
        "type.csv": ([*TRADE_COLUMNS, "type"], None, None),
        "twice.csv": ([*TRADE_COLUMNS, "price"], None, None),
        "extra.csv": ([*TRADE_COLUMNS, "note"], None, None),
        "reordered.csv": (list(reversed(TRADE_COLUMNS)), None, None),
    }
    for name, (header, drop, venue) in variants.items():
        if drop is not None:
            body = [row[:drop] + row[drop + 1 :] for row in rows]
        elif "type" in header:
            body = [[*row, ["", "trade", "heartbeat", "x"][i % 4]] for i, row in enumerate(rows)]
        elif header[-1] in ("price", "note"):
            body = [[*row, ["1.5", "", "x"][i % 3]] for i, row in enumerate(rows)]
        else:
            body = [list(reversed(row)) for row in rows]
        path = tmp_path / name
        path.write_text(_csv_text(header, body, end="\n"))
        assert_same(path, venue=venue, batch_lines=(33, 16_384), per_message=3)


def test_a_truncated_csv_stops_at_the_same_line(tmp_path: Path) -> None:
    whole = gzip.compress(_csv_text(list(TRADE_COLUMNS), _hostile_csv_rows()).encode())
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(whole[: len(whole) // 2])
    want = assert_same(path, batch_lines=(7, 16_384))
    assert "error" in want


def _table(columns: dict[str, Any]) -> pa.Table:
    return pa.table(columns)


def test_parquet_column_types_publish_the_same_log(tmp_path: Path) -> None:
    trades = list(spot_trades()[:3000])
    base: dict[str, Any] = {c: [t.to_dict()[c] for t in trades] for c in TRADE_COLUMNS}
    n = len(trades)
    big_ids = [2**64 - 1 - (i % 3) * 2**62 for i in range(n)]  # above and below 2**63
    cases: dict[str, dict[str, Any]] = {
        "strings": base,
        "decimals": {**base, "price": pa.array([Decimal(p) for p in base["price"]], DEC)},
        "floats": {**base, "qty": pa.array([float(q) for q in base["qty"]], pa.float64())},
        "int_ids": {**base, "id": pa.array([int(i) for i in base["id"]], pa.int64())},
        "bad_ids": {**base, "id": pa.array([-1 if i % 5 == 0 else i for i in range(n)])},
        "uint_ids": {**base, "id": pa.array(big_ids, pa.uint64())},
        "int_prices": {**base, "price": pa.array([i % 7 - 1 for i in range(n)], pa.int32())},
        "timestamps": {**base, "ts_ms": pa.array(base["ts_ms"], pa.timestamp("ms", "UTC"))},
        "v": {**base, "v": pa.array([[1, 2, None][i % 3] for i in range(n)], pa.int8())},
        "v_text": {**base, "v": pa.array(["1"] * n)},
        "type": {**base, "type": pa.array([[None, "trade", "heartbeat"][i % 3] for i in range(n)])},
        "venue_gaps": {**base, "venue": pa.array([[None, "", "x"][i % 3] for i in range(n)])},
        "no_recv": {**base, "recv_ms": pa.array([None] * n, pa.int64())},
        "bool_side": {**base, "side": pa.array([i % 2 == 0 for i in range(n)])},
        "binary_symbol": {**base, "symbol": pa.array([b"BTCUSDT"] * n)},
        "dictionary": {**base, "symbol": pa.array(base["symbol"]).dictionary_encode()},
        "bad_values": {
            **base,
            "price": [["0", "-1", "1e5", "61828.5", None][i % 5] for i in range(n)],
            "ts_ms": [[5, 1723161255342, -1, None][i % 4] for i in range(n)],
        },
    }
    for name, columns in cases.items():
        path = tmp_path / f"{name}.parquet"
        pq.write_table(_table(columns), path, row_group_size=1000)
        for venue in (None, "binance-us"):
            assert_same(path, venue=venue, batch_lines=(777, 16_384))


# --------------------------------------------------------------------------- file_trades


def _exact(line: bytes) -> list[bytes] | None:
    """What the file form makes of a line when it is all trades: their encodings."""
    try:
        obj = loads(line)
    except ParseError:
        return None
    records = obj if isinstance(obj, list) else [obj]
    out = []
    for record in records:
        try:
            decoded = decode_record(record, from_file=True)
        except ParseError:
            return None
        if not isinstance(decoded, Trade):
            return None
        out.append(decoded.encode())
    return out


def test_file_trades_admits_only_lines_that_are_their_own_messages() -> None:
    lines = _hostile_lines()
    found = file_trades(lines)
    fast = set(range(len(lines))) - set(found.slow)
    rows = found.rows
    for index in fast:
        texts = rows.filter(rows["msg"] == index)["item"].to_list()
        exact = _exact(lines[index])
        assert exact is not None, lines[index][:200]
        assert [t.encode() for t in texts] == exact
        assert [t.encode() for t in texts] == (
            [lines[index]] if not lines[index].startswith(b"[") else exact
        )
    # Every plain trade line is fast; what goes slow is the odd lines — non-canonical, invalid,
    # not a trade, or valid but outside the pattern's (slightly narrower) ranges.
    plain = {t.encode() for t in spot_trades()[:3000]}
    assert all(lines[index] not in plain for index in found.slow)
    assert len(found.slow) < 70


def test_file_trades_keys_and_times() -> None:
    trades = spot_trades()[:50]
    found = file_trades([t.encode() for t in trades])
    assert found.slow == [] and not found.arrays
    assert found.rows["key"].to_list() == [t.key for t in trades]
    assert found.rows["venue"].to_list() == [t.venue for t in trades]
    assert found.rows["ts_ms"].to_list() == [t.ts_ms for t in trades]
    assert found.rows["recv_ms"].to_list() == [t.recv_ms for t in trades]
    assert file_trades([]).rows.height == 0


@pytest.mark.parametrize(
    ("price", "qty", "fast"),
    [
        ("61828.5", "0.1", True),
        ("0.00000001", "1", True),
        ("0.000000010", "1", True),
        ("1.100000000000000000000000", "1", True),  # 24 decimals: 8 + 16 zeros
        ("1.1000000000000000000000000", "1", False),  # 25: valid, the exact reading's
        ("0.10000000000000000", "1", True),  # below 1: up to 16 zeros after the last digit
        ("0.100000000000000000000000", "1", False),  # valid, the exact reading's
        ("9.99999999", "999999999999", True),  # < 10 × < 1e12
        ("10", "999999999999", False),  # 1e13 - ...: the exact reading decides
        ("1234567890123", "0.99999999", True),
        ("0", "1", False),
        ("0.0", "1", False),
        ("00.1", "1", False),
        (".1", "1", False),
        ("1.", "1", False),
        ("0.000000001", "1", False),
    ],
)
def test_the_file_pattern_holds_the_value_checks(price: str, qty: str, fast: bool) -> None:
    t = {**spot_trades()[0].to_dict(), "price": price, "qty": qty}
    line = orjson.dumps(t)
    found = file_trades([line])
    assert (found.slow == []) is fast
    if fast:
        assert _exact(line) == [line]
    import re

    assert (re.fullmatch(FILE_TRADE[1:-1], line.decode()) is not None) is fast


def test_plain_csv_and_parquet_rows_take_the_column_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows read one by one are only the odd ones: the plain rows never become Trade objects."""
    import connectors.replay as replay

    exact: list[int] = []
    original = replay._record_result

    def counted(*args: Any) -> Any:
        exact.append(1)
        return original(*args)

    monkeypatch.setattr(replay, "_record_result", counted)
    trades = list(spot_trades()[:3000])
    rows = [["" if v is None else str(v) for v in t.to_dict().values()] for t in trades]
    (tmp_path / "t.csv").write_text(_csv_text(list(TRADE_COLUMNS), rows))
    table = pa.table({c: [t.to_dict()[c] for t in trades] for c in TRADE_COLUMNS})
    pq.write_table(table, tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        batches = list(iter_batches(tmp_path / name))
        assert sum(len(b.values) for b in batches) == 3000
        assert [v for b in batches for v in b.values] == [t.encode() for t in trades]
    assert exact == []
    path = tmp_path / "hostile.csv"
    path.write_text(_csv_text(list(TRADE_COLUMNS), _hostile_csv_rows()))
    list(iter_batches(path))
    assert 10 < len(exact) < 40


def test_a_replay_stopped_part_way_stops_its_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``candlewax replay`` / ``demo --replay`` stopped (Ctrl-C) mid-file: the batch being sent
    goes out whole, nothing after it, and the reader thread is gone once publish returns."""
    from candlewax.cli.common import publish as cli_publish
    from candlewax.settings import Settings

    stop = threading.Event()
    original = TradeProducer.send_encoded

    def sending(self: TradeProducer, *args: Any, **kwargs: Any) -> int:
        stop.set()  # Ctrl-C while the first batch is being sent
        return original(self, *args, **kwargs)

    monkeypatch.setattr(TradeProducer, "send_encoded", sending)
    settings = Settings(bootstrap_servers="127.0.0.1:9", data_dir=tmp_path)
    stats = cli_publish(settings, iter_batches(SPOT, batch_lines=500), 0.0, 0, 1, stop)
    assert stats.trades == 500
    assert not [t for t in threading.enumerate() if t.name == "replay-reader"]
