"""The fuzz campaign the project keeps: every decoder, fed mutants of real recordings.

Each decoder must, for any input, return its record (or records) or raise
:class:`~candlewax.errors.ParseError` with a reason of the fixed set — anything else is a
*crash*. The ``trades`` decoder is also differential: a batch's fast path must give exactly the
rows and rejections that the exact decoder gives message by message (a *disagreement*).

    python -m tests.fuzz.campaign                    # make fuzz: ≥ 100,000 cases per decoder
    python -m tests.fuzz.campaign --cases 2000 --only binance okx

Seeded (``--seed``): the same arguments give the same cases. Every decoder is bounded by
``--cases`` and ``--seconds``; the report prints cases, rejections by reason, crashes (must be
0), disagreements (must be 0) and the slowest case. ``make test`` runs it at 10,000 cases per
decoder (tests/unit/test_fuzz.py).
"""

from __future__ import annotations

import argparse
import base64
import csv
import gzip
import io
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import polars as pl

from candlewax.codec import (
    REASONS,
    Alert,
    Bar,
    DeadLetter,
    Gap,
    Heartbeat,
    ParseError,
    Since,
    Trade,
    UserEvent,
    decode_message,
    encode_trades,
)
from candlewax.codec.columns import bar_columns, decode_batch

FIXTURES = Path(__file__).resolve().parents[3] / "shared" / "fixtures"
HFT = FIXTURES / "hftbacktest"
CRYPTOFEED = FIXTURES / "cryptofeed"
FINNHUB = FIXTURES / "derived" / "finnhub_envelope_from_binance_btcusdt_20240808.jsonl"

# --------------------------------------------------------------------------- seeds


@cache
def _hft_lines(name: str, limit: int = 4000) -> tuple[bytes, ...]:
    out = []
    with gzip.open(HFT / name, "rb") as stream:
        for line in stream:
            out.append(line.rstrip(b"\n"))
            if len(out) >= limit:
                break
    return tuple(out)


@cache
def _cryptofeed(name: str) -> tuple[bytes, ...]:
    """The received messages of a cryptofeed capture (without the ``<ts>: `` prefix)."""
    out = []
    for number, line in enumerate((CRYPTOFEED / name).read_bytes().splitlines()):
        head, _, raw = line.partition(b": ")
        if number and raw and b" <- " not in head:
            out.append(raw)
    return tuple(out)


@cache
def _trades() -> tuple[Trade, ...]:
    from connectors.binance import Binance

    parser = Binance()
    trades: list[Trade] = []
    for line in _hft_lines("spot_btcusdt_20240808.gz"):
        stamp, _, raw = line.partition(b" ")
        if b"@trade" in raw[:40]:
            trades.extend(parser.parse_frame(raw, recv_ms=int(stamp) // 1_000_000))
    return tuple(trades)


@cache
def _trade_messages() -> tuple[bytes, ...]:
    trades = _trades()
    singles = [t.encode() for t in trades[:1500]]
    arrays = [encode_trades(list(trades[i : i + 5])) for i in range(1500, 1800, 5)]
    beats = [Heartbeat("binance", t.ts_ms).encode() for t in trades[:1800:60]]
    markers = [Since("binance", t.symbol, t.ts_ms - t.ts_ms % 60_000).encode()
               for t in trades[:1800:120]]  # fmt: skip
    markers += [
        Gap("binance", t.symbol, t.ts_ms - 5_000, t.ts_ms).encode() for t in trades[:1800:90]
    ]
    return tuple(singles + arrays + beats + markers)


@cache
def _bars() -> tuple[bytes, ...]:
    from flows.activity import ActivityBars, parse_kind
    from flows.barmath import BarState, TimeRules

    state = BarState(time_rules=TimeRules(quorum=1))
    on_time = state.step(decode_batch([t.encode() for t in _trades()]).rows).on_time
    closed = state.flush().closed
    frames = [bar_columns(frame, name) for name, frame in closed.items() if frame.height]
    kinds = [parse_kind(k) for k in ("tick:100", "volume:0.5", "value:25000.5")]
    for name, frame in ActivityBars(default=kinds).step(on_time).items():  # bars by activity
        frames.append(bar_columns(state.flag_spans(frame), name).head(20))
    return tuple(Bar.from_dict(row).encode() for frame in frames for row in frame.to_dicts())


@cache
def _alerts() -> tuple[bytes, ...]:
    from flows.barmath import BarState, TimeRules
    from flows.volatility import AlertRules, VolatilityState

    rules = AlertRules(range={"1m": 0.0005, "5m": 0.001}, move={"1m": 0.0002}, zscore={"1m": 0.5},
                       zscore_warmup_bars=1, cooldown_ms=0)  # fmt: skip
    bars, vol = BarState(time_rules=TimeRules(quorum=1)), VolatilityState(rules)
    result = bars.step(decode_batch([t.encode() for t in _trades()]).rows)
    alerts = vol.on_trades(result.on_time) + vol.on_closed(result.closed)
    flushed = bars.flush()
    alerts += vol.on_trades(flushed.on_time) + vol.on_closed(flushed.closed)
    return tuple(a.encode() for a in alerts)


@cache
def _user_events() -> tuple[bytes, ...]:
    """The alert events and delivery outcomes of the recorded alerts, as the notifier writes
    them for a gateway user."""
    alerts = [Alert.decode(raw) for raw in _alerts()[:300]]
    outcomes = (("delivered", ""), ("digested", ""), ("dead_lettered", "http_403"),
                ("dead_lettered", "errcode_-2"), ("duplicate", "delivered"))  # fmt: skip
    out = []
    for i, alert in enumerate(alerts):
        user = ("desk-1", "ops.team_2", "U" * 64)[i % 3]
        ts_ms = alert.ts_ms + 250
        out.append(UserEvent.of_alert(user, alert, ts_ms).encode())
        outcome, reason = outcomes[i % len(outcomes)]
        channel = ("tg:-1001234567890", "desk", "企业微信")[i % 3]
        out.append(UserEvent.of_delivery(user, alert.id, channel, outcome, reason, ts_ms).encode())
    return tuple(out)


@cache
def _dead_letters() -> tuple[bytes, ...]:
    raws = [*_trade_messages()[:40], b"\xff\xfe garbage", b'"' * 5000, "€".encode() * 2000]
    return tuple(
        DeadLetter(REASONS[i % len(REASONS)], f"detail {i}", raw,
                   {"topic": "trades", "partition": i % 3, "offset": i}, ts_ms=1723161255342).encode()
        for i, raw in enumerate(raws)
    )  # fmt: skip


# --------------------------------------------------------------------------- the mutator

INTERESTING: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**31, 2**53 + 1, 2**63, 2**64 + 1, 10**100, -(10**20),
    0.1, 1e-9, 1e308, -0.0, "", " ", "0", "-1", "+5", " 5 ", "1_000", "1e5", ".5", "5.", "007",
    "0.000000001", "1.000000000", "9" * 4301, "1" * 20, "NaN", "Infinity", "\u0665", "\uff15",
    "\x00", "bin\x00ance", "x/../../../ESCAPED", "../..", "A" * 70, "a" * 300, "BTC/USDT",
    "buy", "sell", "Buy", "heartbeat", "trade", "binance", "BTCUSDT", "1723161255342",
    [], {}, [1, 2], {"a": 1}, "\"'\\", "<b>&</b>", "😀", "\ud83d\ude00",
)  # fmt: skip
_RAW_SNIPPETS = (
    b"\\ud800", b'"\\ud800"', b"NaN", b"1e400", b"18446744073709551617", b"[" * 300,
    b"]" * 300, b'"' * 50, b"\x00", b"\xff", b"\n", b"},{", b",", b":", b"{", b"}",
)  # fmt: skip


def _deep(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for key, value in obj.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(obj, list):
        for index, value in enumerate(obj[:8]):
            yield from _paths(value, (*prefix, index))


def _set(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, *rest = path
    obj[head] = _set(obj[head], tuple(rest), value)
    return obj


def _json_mutant(rng: random.Random, seed: bytes) -> bytes | None:
    try:
        obj = json.loads(seed)
    except (ValueError, RecursionError):
        return None
    paths = list(_paths(obj))
    path = rng.choice(paths)
    action = rng.randrange(8)
    if action <= 3:  # replace a value
        value = rng.choice(INTERESTING)
        if rng.random() < 0.05:
            value = _deep(rng.choice([50, 300, 900]))
        obj = _set(obj, path, value)
    elif action == 4 and path:  # remove a member
        parent = obj
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict):
            parent.pop(path[-1], None)
    elif action == 5:  # add an unknown member, or a member twice (written out by hand)
        text = json.dumps(obj, separators=(",", ":"))
        if text.endswith("}"):
            key = rng.choice(["price", "id", "venue", "ts_ms", "type", "x", "v"])
            extra = json.dumps(rng.choice(INTERESTING))
            return (text[:-1] + f',"{key}":{extra}}}').encode("utf-8", "surrogatepass")
    elif action == 6:  # numbers as strings and strings as numbers
        holder = obj
        for step in path[:-1]:
            holder = holder[step]
        leaf = holder[path[-1]] if path else obj
        swapped = str(leaf) if isinstance(leaf, int | float) else leaf
        text = leaf.replace(".", "", 1) if isinstance(leaf, str) else ""
        if text.isascii() and text.isdigit() and len(text) <= 40:  # the JSON number it spells
            swapped = float(leaf) if "." in leaf else int(leaf)
        obj = _set(obj, path, swapped)
    style = rng.randrange(4)
    try:
        if style == 0:
            text = json.dumps(obj, separators=(",", ":"))
        elif style == 1:
            text = json.dumps(obj, indent=rng.choice([None, 1]), ensure_ascii=False)
        elif style == 2:
            text = json.dumps(obj, separators=(", ", ": "), sort_keys=True)
        else:
            text = json.dumps(obj, ensure_ascii=True)
    except (RecursionError, ValueError, TypeError):
        return None
    return text.encode("utf-8", "surrogatepass")


def mutate(rng: random.Random, seed: bytes, corpus: tuple[bytes, ...]) -> bytes:
    """One mutant of ``seed``: JSON-aware most of the time, raw bytes otherwise (stacked)."""
    out = seed
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        if rng.random() < 0.6:
            mutant = _json_mutant(rng, out)
            if mutant is not None:
                out = mutant
                continue
        data = bytearray(out)
        action = rng.randrange(6)
        at = rng.randrange(len(data) + 1)
        if action == 0 and data:
            data[min(at, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif action == 1:
            data[at:at] = rng.choice(_RAW_SNIPPETS)
        elif action == 2 and data:
            del data[at : at + rng.randrange(1, 16)]
        elif action == 3:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            data = bytearray(bytes(data[:at]) + other[cut:])
        elif action == 4 and data:
            piece = data[at : at + rng.randrange(1, 64)]
            data[at:at] = piece * rng.randrange(1, 4)
        else:
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 8)))
        out = bytes(data)
    return out


# --------------------------------------------------------------------------- decoders


class Disagreement(AssertionError):
    """The fast path and the exact path read a message differently."""


#: Messages each decoder's own counters saw (the trades target: read by the fast path).
NOTES: Counter[str] = Counter()


@dataclass
class Target:
    name: str
    seeds: Callable[[], tuple[bytes, ...]]
    #: Runs a chunk of inputs; yields, per input, None (accepted) or the rejection reason.
    run: Callable[[list[bytes]], Iterator[str | None]]
    chunk: int = 1


def _single(decode: Callable[[bytes], Any]) -> Callable[[list[bytes]], Iterator[str | None]]:
    def run(items: list[bytes]) -> Iterator[str | None]:
        for raw in items:
            try:
                decode(raw)
            except ParseError as exc:
                yield exc.reason
            else:
                yield None

    return run


def _venue(cls_path: str) -> Callable[[list[bytes]], Iterator[str | None]]:
    module, _, name = cls_path.rpartition(".")

    def run(items: list[bytes]) -> Iterator[str | None]:
        import importlib

        parser = getattr(importlib.import_module(module), name)()
        for raw in items:
            try:
                trades = parser.parse_frame(raw, recv_ms=1723161255000)
                assert all(isinstance(t, Trade) for t in trades)
                parser.control(raw)  # never raises, whatever the frame
            except ParseError as exc:
                yield exc.reason
            else:
                yield None

    return run


def _rest_pages(rows: list[dict[str, Any]], size: int = 5) -> tuple[bytes, ...]:
    return tuple(json.dumps(rows[i : i + size]).encode() for i in range(0, len(rows), size))


@cache
def _rest_seeds(venue: str) -> tuple[bytes, ...]:
    """Trade-list bodies as each venue's REST answers them, made of recorded trades."""
    if venue == "binance":
        events = [json.loads(line.partition(b" ")[2])["data"]
                  for line in _hft_lines("spot_btcusdt_20240808.gz", 1500)
                  if b"@trade" in line[:80]]  # fmt: skip
        return _rest_pages([
            {"id": e["t"], "price": e["p"], "qty": e["q"], "quoteQty": "0", "time": e["T"],
             "isBuyerMaker": e["m"], "isBestMatch": True} for e in events
        ])  # fmt: skip
    if venue == "binance-usdm":
        aggs = [json.loads(raw)["data"] for raw in _cryptofeed("BINANCE_FUTURES.ws.1.0")
                if b"@aggTrade" in raw[:60]]  # fmt: skip
        return _rest_pages([{k: a[k] for k in ("a", "p", "q", "f", "l", "T", "m")} for a in aggs])
    matches = [json.loads(raw) for raw in _cryptofeed("COINBASE.ws.28.0")
               if b'"type":"match"' in raw]  # fmt: skip
    return _rest_pages(
        [{k: m[k] for k in ("time", "trade_id", "price", "size", "side")} for m in matches]
    )


def _rest(cls_path: str, symbol: str) -> Callable[[list[bytes]], Iterator[str | None]]:
    """A REST trade-list body through the start-up fill's reading of it: the rows (or a
    ParseError for the whole body), then each row through the venue's parser; the outcome is
    the first refused row's reason."""
    module, _, name = cls_path.rpartition(".")

    def run(items: list[bytes]) -> Iterator[str | None]:
        import importlib

        import httpx

        from connectors.venues import RestRejection

        refused: list[RestRejection] = []
        with httpx.Client() as client:  # never sends: the rows are given
            history = getattr(importlib.import_module(module), name)(
                client, symbol, reject=refused.append
            )
            for raw in items:
                refused.clear()
                try:
                    page = history.page("/fuzz", history.read_rows(raw), 0, None)
                    assert all(isinstance(t, Trade) for t in page.trades)
                except ParseError as exc:
                    yield exc.reason
                else:
                    yield refused[0].reason if refused else None

    return run


def _trades_batch(items: list[bytes]) -> Iterator[str | None]:
    """Decode the chunk as one batch; the exact decoder message by message must agree."""
    batch = decode_batch(items, list(range(len(items))))  # type: ignore[arg-type]
    NOTES["trades: read by the fast path"] += len(items) - batch.exact
    per_message: list[tuple[list[Any], list[Any]]] = [decode_message(raw) for raw in items]
    rows = batch.rows
    want_rows = [
        (r.venue, r.ts_ms) if isinstance(r, Heartbeat) else (r.venue, r.symbol, r.id, r.ts_ms)
        for good, _ in per_message
        for r in good
        if isinstance(r, Trade | Heartbeat)
    ]
    want_markers = [(i, r) for i, (good, _) in enumerate(per_message) for r in good
                    if isinstance(r, Since | Gap)]  # fmt: skip
    if [m for _, m in batch.markers] != [m for _, m in want_markers] or [
        o for o, _ in batch.markers
    ] != [i for i, _ in want_markers]:
        raise Disagreement("markers differ")
    got_rows = [
        (v, ts) if hb else (v, s, i, ts)
        for hb, v, s, i, ts in rows.select("hb", "venue", "symbol", "id", "ts_ms").iter_rows()
    ]
    want_rejections = [(i, r.reason) for i, (_, bad) in enumerate(per_message) for r in bad]
    got_rejections = [(i, r.reason) for i, r in batch.rejected]
    if got_rows != want_rows or got_rejections != want_rejections:
        raise Disagreement(f"rows {len(got_rows)} vs {len(want_rows)}")
    exact = [(r.venue, r.symbol, r.price, r.qty, r.side, r.recv_ms) for good, _ in per_message
             for r in good if isinstance(r, Trade)]  # fmt: skip
    from candlewax.codec import format_scaled

    trades = rows.filter(~pl.col("hb"))
    fast = [
        (v, s, p, q, None if b is None else ("buy" if b else "sell"), rv)
        for v, s, p, q, b, rv in trades.select("venue", "symbol", "p", "q", "buy", "recv_ms").iter_rows()
    ]  # fmt: skip
    scaled = [(v, s, format_scaled(_scaled(p)), format_scaled(_scaled(q)), side, rv)
              for v, s, p, q, side, rv in exact]  # fmt: skip
    if [
        (v, s, format_scaled(p), format_scaled(q), sd, rv) for v, s, p, q, sd, rv in fast
    ] != scaled:
        raise Disagreement("values differ")
    for good, bad in per_message:
        yield bad[0].reason if bad and not good else None


def _scaled(text: str) -> int:
    from candlewax.codec import to_scaled

    return to_scaled(text)


def _replay(
    fmt: str, venue: str | None, name: str
) -> Callable[[list[bytes]], Iterator[str | None]]:
    """Write the chunk as the lines of a file of ``fmt`` and read it back: every line yields
    its trades or its dead letters, nothing raises."""

    def run(items: list[bytes]) -> Iterator[str | None]:
        from connectors.replay import iter_file

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            lines = [item.replace(b"\n", b" ").replace(b"\r", b" ") or b"x" for item in items]
            if fmt == "csv":
                path.write_bytes(
                    b"v,venue,symbol,id,price,qty,side,ts_ms,recv_ms\n" + b"\n".join(lines)
                )
            else:
                path.write_bytes(b"\n".join(lines) + b"\n")
            reasons: dict[int, str | None] = {}
            for item in iter_file(path, venue=venue, fmt=fmt):
                for letter in item.rejected:
                    reasons.setdefault(int(letter.source["line"]), letter.reason)
                    assert letter.reason in REASONS
                for trade in item.trades:
                    assert isinstance(trade, Trade)
        offset = 2 if fmt == "csv" else 1
        for index in range(len(items)):
            yield reasons.get(index + offset)

    return run


def _batches_agree(path: Path, venue: str | None = None) -> dict[int, str]:
    """Read a trade file both ways: the batch path (``iter_batches``, what ``candlewax replay``
    publishes) must give exactly the items, trades (as their messages), receive times and dead
    letters of the per-trade path (``iter_file``). Returns the first rejection per line."""
    from connectors.publish import TradeBatch
    from connectors.replay import iter_batches, iter_file

    want = TradeBatch.from_items(
        [(i.recv_ms, i.trades, i.rejected) for i in iter_file(path, venue=venue)]
    )
    got = list(iter_batches(path, venue=venue, batch_lines=37))

    def letters(batch_items: list[tuple[int, list[Any]]]) -> list[tuple[Any, ...]]:
        return [(at, d.reason, d.detail, d.raw, d.source) for at, ds in batch_items for d in ds]

    values = [v for b in got for v in b.values]
    keys = [k for b in got for k in b.keys]
    times = [row for b in got for row in b.times.iter_rows()]
    recv = [r for b in got for r in b.recv_ms]
    counts: list[int] = []
    rejected: list[tuple[int, list[Any]]] = []
    offset = 0
    for b in got:
        counts += [end - start for start, end in zip([0, *b.ends[:-1]], b.ends, strict=True)]
        rejected += [(offset + at, ds) for at, ds in sorted(b.rejected.items())]
        offset += len(b.ends)
    want_counts = [e - s for s, e in zip([0, *want.ends[:-1]], want.ends, strict=True)]
    if values != want.values or keys != want.keys or times != list(want.times.iter_rows()):
        raise Disagreement(f"trades differ: {len(values)} vs {len(want.values)}")
    if recv != want.recv_ms or counts != want_counts:
        raise Disagreement("items differ")
    if letters(rejected) != letters(sorted(want.rejected.items())):
        raise Disagreement("dead letters differ")
    reasons: dict[int, str] = {}
    for _, letters_of_item in sorted(want.rejected.items()):
        for letter in letters_of_item:
            reasons.setdefault(int(letter.source["line"]), letter.reason)
    return reasons


def _replay_batches(fmt: str) -> Callable[[list[bytes]], Iterator[str | None]]:
    """The chunk as the lines of an NDJSON or CSV file, read both ways (:func:`_batches_agree`)."""

    def run(items: list[bytes]) -> Iterator[str | None]:
        from candlewax.codec.columns import file_trades

        lines = [item.replace(b"\n", b" ").replace(b"\r", b" ") or b"x" for item in items]
        with tempfile.TemporaryDirectory() as tmp:
            if fmt == "csv":
                path = Path(tmp) / "t.csv"
                header = b"v,venue,symbol,id,price,qty,side,ts_ms,recv_ms\n"
                path.write_bytes(header + b"\n".join(lines))
            else:
                path = Path(tmp) / "t.jsonl"
                path.write_bytes(b"\n".join(lines) + b"\n")
                NOTES["replay-batches: lines read by the fast path"] += len(lines) - len(
                    file_trades(lines).slow
                )
            reasons = _batches_agree(path)
        offset = 2 if fmt == "csv" else 1
        for index in range(len(items)):
            yield reasons.get(index + offset)

    return run


def _csv_seeds() -> tuple[bytes, ...]:
    out = []
    for t in _trades()[:1000]:
        buf = io.StringIO()
        csv.writer(buf, lineterminator="").writerow(
            [1, t.venue, t.symbol, t.id, t.price, t.qty, t.side or "", t.ts_ms, t.recv_ms or ""]
        )
        out.append(buf.getvalue().encode())
    return tuple(out)


def _parquet(items: list[bytes], both_ways: bool = False) -> Iterator[str | None]:
    """Each input becomes one row of a Parquet file whose price, qty, id and ts_ms columns get
    types drawn per file (strings, floats, integers, decimals, booleans, bytes); half the rows
    hold valid values for their types, the others mutants: every row yields its trade or a dead
    letter (``both_ways``: and the batch path reads the file as the per-trade path does)."""
    from decimal import Decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    from connectors.replay import iter_file

    kinds = [pa.string(), pa.float64(), pa.int64(), pa.decimal128(38, 10), pa.bool_(), pa.binary()]
    rng = random.Random(b"".join(items[:3]))
    types = {name: rng.choice(kinds) for name in ("id", "price", "qty", "ts_ms")}
    types |= {"venue": pa.string(), "symbol": pa.string()}
    good = {"venue": "binance", "symbol": "BTCUSDT", "id": "3735683259", "price": "61828.5",
            "qty": "0.25", "ts_ms": "1723161255342"}  # fmt: skip
    columns: dict[str, list[Any]] = {name: [] for name in types}
    for raw in items:
        valid = rng.random() < 0.5
        text = raw.decode("utf-8", "replace")[: rng.choice([8, 40, 400])]
        for name, kind in types.items():
            value = good[name] if valid else text
            if pa.types.is_string(kind):
                columns[name].append(value)
            elif pa.types.is_floating(kind):
                columns[name].append(float(good[name]) if valid and name != "id" else
                                     rng.choice([0.1, -1.0, 1e308, float("nan"), 1e-9, 2.0**70]))  # fmt: skip
            elif pa.types.is_integer(kind):
                columns[name].append(int(float(good[name])) if valid else
                                     rng.choice([0, -1, 2**62, 7, -(2**63)]))  # fmt: skip
            elif pa.types.is_decimal(kind):
                columns[name].append(Decimal(good[name]) if valid else
                                     Decimal(rng.choice(["0", "1E-10", "-5", "99999999999999"])))  # fmt: skip
            elif pa.types.is_boolean(kind):
                columns[name].append(rng.random() < 0.5)
            else:
                columns[name].append(raw[:40])
    table = pa.table({n: pa.array(v, types[n]) for n, v in columns.items()})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trades.parquet"
        pq.write_table(table, path)
        reasons: dict[int, str | None] = {}
        for item in iter_file(path):
            for letter in item.rejected:
                assert letter.reason in REASONS
                reasons[int(letter.source["line"])] = letter.reason
        if both_ways:
            _batches_agree(path)
            _batches_agree(path, venue="binance-us")
    for index in range(len(items)):
        yield reasons.get(index + 1)


# --------------------------------------------------------------------------- the gateway's inputs


def _gateway_requests() -> tuple[bytes, ...]:
    """Requests as clients send them (Binance's methods, a login) over real stream names."""
    from sinks.gateway.auth import sign

    names = ["btcusdt@kline_1m", "binance:ethusdt@trade", "okx:btcusdt@ticker", "!ticker@arr",
             "!alert", "finnhub:binance:btcusdt@alert", "user"]  # fmt: skip
    out = [orjson.dumps({"method": "SUBSCRIBE", "params": names[:k], "id": k}) for k in range(1, 8)]
    out += [
        orjson.dumps({"method": "UNSUBSCRIBE", "params": names[2:4], "id": "abc"}),
        b'{"method":"LIST_SUBSCRIPTIONS","id":3}',
        b'{"method":"SET_PROPERTY","params":["combined",true],"id":5}',
        b'{"method":"GET_PROPERTY","params":["combined"],"id":null}',
        orjson.dumps(
            {
                "method": "LOGIN",
                "params": {
                    "apiKey": "desk-1",
                    "timestamp": 1723161600000,
                    "signature": sign("desk-1", "s3cret", 1723161600000),
                },
                "id": 7,
            }
        ),
    ]
    return tuple(out)


def _protocol_reason(code: int, msg: str) -> str:
    if code == 3:
        return "json"
    if code == 0 or "unknown field" in msg:
        return "unknown_field"
    if "missing field" in msg:
        return "missing_field"
    if "unknown variant" in msg:
        return "unknown_type"
    return "bad_name" if "stream" in msg else "bad_type"


def _gateway_request(items: list[bytes]) -> Iterator[str | None]:
    """parse_request, then what the gateway does with the request: stream names parsed, a
    LOGIN checked against a key (never an exception but the protocol's)."""
    from sinks.gateway.auth import Keys, key_hash
    from sinks.gateway.protocol import ProtocolError, parse_request
    from sinks.gateway.streams import StreamError, parse_stream

    keys = Keys({"desk-1": bytes.fromhex(key_hash("s3cret").removeprefix("sha256:"))})
    for raw in items:
        try:
            request = parse_request(raw)
            if request.method in ("SUBSCRIBE", "UNSUBSCRIBE"):
                for name in request.params:
                    parse_stream(name, "binance", ("1m", "5m", "1h", "1d"))
            elif request.method == "LOGIN":
                keys.check(request.params, 1723161600000, 10_000)
        except ProtocolError as exc:
            yield _protocol_reason(exc.code, exc.msg)
        except StreamError:
            yield "bad_name"
        else:
            yield None


def targets() -> list[Target]:
    return [
        Target("trades", _trade_messages, _trades_batch, chunk=100),
        Target("bar", _bars, _single(Bar.decode)),
        Target("alert", _alerts, _single(Alert.decode)),
        Target("user-event", _user_events, _single(UserEvent.decode)),
        Target("deadletter", _dead_letters, _single(DeadLetter.decode)),
        Target("gateway-request", _gateway_requests, _gateway_request, chunk=100),
        Target(
            "binance",
            lambda: (
                tuple(line.partition(b" ")[2] for line in _hft_lines("spot_btcusdt_20240808.gz"))
                + _cryptofeed("BINANCE_FUTURES.ws.1.0")
            ),
            _venue("connectors.binance.Binance"),
        ),
        Target("okx", lambda: _cryptofeed("OKX.ws.1.0"), _venue("connectors.okx.Okx")),
        Target(
            "coinbase",
            lambda: _cryptofeed("COINBASE.ws.28.0"),
            _venue("connectors.coinbase.Coinbase"),
        ),
        Target(
            "bybit",
            lambda: _cryptofeed("BYBIT.ws.25.0") + _cryptofeed("BYBIT.ws.26.0"),
            _venue("connectors.bybit.Bybit"),
        ),
        Target(
            "finnhub",
            lambda: tuple(FINNHUB.read_bytes().splitlines()),
            _venue("connectors.finnhub.Finnhub"),
        ),
        Target(
            "binance-rest",
            lambda: _rest_seeds("binance"),
            _rest("connectors.venues.BinanceHistory", "BTCUSDT"),
            chunk=100,
        ),
        Target(
            "binance-usdm-rest",
            lambda: _rest_seeds("binance-usdm"),
            _rest("connectors.venues.BinanceUsdmHistory", "SUSHIUSDT"),
            chunk=100,
        ),
        Target(
            "coinbase-rest",
            lambda: _rest_seeds("coinbase"),
            _rest("connectors.venues.CoinbaseHistory", "BTC-USD"),
            chunk=100,
        ),
        Target(
            "replay-hftbacktest",
            lambda: _hft_lines("spot_btcusdt_20240808.gz"),
            _replay("hftbacktest", "binance", "spot_x.txt"),
            chunk=500,
        ),
        Target(
            "replay-recording",  # candlewax record's files of a venue other than Binance
            lambda: tuple(
                b"%d " % (1_652_459_225_000_000_000 + i) + raw
                for i, raw in enumerate(_cryptofeed("OKX.ws.1.0"))
            ),
            _replay("hftbacktest", "okx", "okx-20220513-16.gz"),
            chunk=500,
        ),
        Target(
            "replay-cryptofeed",
            lambda: tuple(
                line
                for line in (CRYPTOFEED / "BINANCE.ws.1.0").read_bytes().splitlines()[1:]
                if b" <- " not in line.partition(b": ")[0]
            ),
            _replay("cryptofeed", "binance", "BINANCE.ws.1.0"),
            chunk=500,
        ),
        Target("replay-ndjson", _trade_messages, _replay("ndjson", None, "t.jsonl"), chunk=500),
        Target("replay-batches", _trade_messages, _replay_batches("ndjson"), chunk=500),
        Target("replay-csv", _csv_seeds, _replay("csv", None, "t.csv"), chunk=500),
        Target("replay-parquet", _csv_seeds, _parquet, chunk=200),
        Target("replay-batches-csv", _csv_seeds, _replay_batches("csv"), chunk=500),
        Target(
            "replay-batches-parquet",
            _csv_seeds,
            lambda items: _parquet(items, both_ways=True),
            chunk=200,
        ),
    ]


# --------------------------------------------------------------------------- the runner


@dataclass
class Report:
    name: str
    cases: int = 0
    accepted: int = 0
    rejections: Counter[str] = field(default_factory=Counter)
    crashes: list[tuple[str, str]] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)
    slowest_s: float = 0.0
    slowest: bytes = b""
    seconds: float = 0.0


def run_target(target: Target, cases: int, seconds: float, seed: int) -> Report:
    rng = random.Random(f"{seed}:{target.name}")
    corpus = target.seeds()
    report = Report(target.name)
    started = time.perf_counter()
    while report.cases < cases and time.perf_counter() - started < seconds:
        size = min(target.chunk, cases - report.cases)
        chunk = [mutate(rng, rng.choice(corpus), corpus) if rng.random() < 0.9
                 else rng.choice(corpus) for _ in range(size)]  # fmt: skip
        t0 = time.perf_counter()
        try:
            outcomes = list(target.run(chunk))
        except Disagreement as exc:
            report.disagreements.append(f"{exc}: {_show(chunk)}")
            outcomes = [None] * size
        except Exception as exc:  # the one thing that must never happen
            report.crashes.append((f"{type(exc).__name__}: {str(exc)[:200]}", _show(chunk)))
            outcomes = [None] * size
        took = (time.perf_counter() - t0) / size
        if took > report.slowest_s:
            report.slowest_s, report.slowest = took, max(chunk, key=len)
        for outcome in outcomes:
            report.cases += 1
            if outcome is None:
                report.accepted += 1
            else:
                assert outcome in REASONS, outcome
                report.rejections[outcome] += 1
    report.seconds = time.perf_counter() - started
    return report


def _show(chunk: list[bytes]) -> str:
    if len(chunk) == 1:
        return base64.b64encode(chunk[0][:2000]).decode()
    return f"{len(chunk)} inputs, the first: {chunk[0][:200]!r}"


def print_report(reports: list[Report], out: Any = sys.stdout) -> None:
    out.write(f"{'decoder':<20} {'cases':>8} {'accepted':>9} {'crashes':>8} {'disagree':>9} "
              f"{'slowest µs':>11} {'s':>6}  rejections by reason\n")  # fmt: skip
    for r in reports:
        reasons = ", ".join(f"{k} {v}" for k, v in r.rejections.most_common())
        out.write(f"{r.name:<20} {r.cases:>8} {r.accepted:>9} {len(r.crashes):>8} "
                  f"{len(r.disagreements):>9} {r.slowest_s * 1e6:>11.0f} {r.seconds:>6.1f}  "
                  f"{reasons}\n")  # fmt: skip
    for r in reports:
        for what, data in r.crashes[:3]:
            out.write(f"CRASH {r.name}: {what}\n  input: {data}\n")
        for what in r.disagreements[:3]:
            out.write(f"DISAGREEMENT {r.name}: {what}\n")
        if r.slowest:
            out.write(f"slowest {r.name}: {r.slowest_s * 1e6:.0f} µs, {len(r.slowest)} bytes: "
                      f"{r.slowest[:80]!r}\n")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="per decoder")
    parser.add_argument("--seconds", type=float, default=600.0, help="per decoder, at most")
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--only", nargs="*", help="decoder names")
    args = parser.parse_args(argv)
    chosen = [t for t in targets() if not args.only or t.name in args.only]
    reports = []
    for target in chosen:
        reports.append(run_target(target, args.cases, args.seconds, args.seed))
        print_report(reports[-1:])
        sys.stdout.flush()
    print("\nsummary")
    print_report(reports)
    failed = sum(len(r.crashes) + len(r.disagreements) for r in reports)
    for note, count in sorted(NOTES.items()):
        print(f"{note}: {count}")
    print(f"\n{sum(r.cases for r in reports)} cases, {failed} crashes or disagreements")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
