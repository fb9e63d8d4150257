"""Readers of recorded traffic and trade files: pure iteration, no Kafka.

:func:`iter_file` streams one file as :class:`ReplayItem` s — the trades of one recorded message
(one websocket frame, one line, one row) with its local receive time, plus the rejected inputs
as :class:`~candlewax.codec.DeadLetter` s sourced ``{"file": path, "line": n}``. Bad lines never
raise and never stop the iteration; configuration problems (unknown format, a venue that cannot
be read yet, a trade file without the trade columns) raise :class:`ConfigError` when
:func:`iter_file` is called, before any item is produced. Publishing, pacing and speed belong to
the publisher (``connectors/publish.py``).

Formats (detected from the name, then from the first bytes; ``fmt=`` overrides):

``hftbacktest``
    gzip, one message per line: ``<recv ns> <raw websocket text>``, the text a Binance
    combined-stream envelope. REST depth snapshots (no ``stream``) and non-trade streams carry no
    trades. Venue from the file name: ``spot_`` → ``binance``, ``usdm_`` → ``binance-usdm``,
    ``cm_`` → ``binance-coinm``, and ``<venue>-<YYYYMMDD>-<HH>[-N].gz[.part]`` — the files of
    ``candlewax record`` (:mod:`connectors.record`) — → ``<venue>``. Recordings of the other
    live venues (okx, coinbase, bybit, finnhub) are read with that venue's parser as its live
    connection reads them: control messages (acks, pongs, notices) are skipped, every other
    line parsed.
``cryptofeed``
    ``sample_data`` captures: line 1 ``<url> <-> <connect ts>``; ``<url> <- <ts>: <json>`` lines
    are what the client sent (skipped); every other line ``<recv unix ts>: <raw message>``. Venue
    from the name: ``BINANCE.ws.*`` → ``binance``, ``BINANCE_US`` → ``binance-us``,
    ``BINANCE_FUTURES`` → ``binance-usdm``, ``BINANCE_DELIVERY`` → ``binance-coinm``. Only Binance
    captures are readable so far; other venues raise :class:`ConfigError`.
``ndjson`` (``.jsonl``/``.ndjson``/``.json``, optionally ``.gz``)
    one ``trades`` message per line in our wire format: an object or an array of objects
    (:func:`candlewax.codec.decode_message` semantics; heartbeats are skipped).
``csv`` (optionally ``.gz``)
    a header with Trade field names; price and qty are kept as the text in the file.
``parquet``
    the same columns; price/qty as strings, decimals, floats or integers, turned into exact
    decimal strings (floats by their shortest round-trip text: ``0.1``, never
    ``0.1000000000000000055511151231257827``), read batch by batch.

For our own formats ``venue`` fills rows that have no venue; ``recv_ms`` of an item is the
largest ``recv_ms`` (or ``ts_ms`` when absent) of its trades. An item with no valid trade keeps
the previous item's ``recv_ms`` (0 before the first). For parquet, ``line`` is the 1-based row.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from candlewax.codec import (
    MAX_ARRAY_ITEMS,
    TRADE_FIELDS,
    DeadLetter,
    Trade,
    decode_record,
)
from candlewax.codec.strictjson import loads
from candlewax.errors import CandlewaxError, ConfigError, ParseError
from connectors.binance import TRADE_CHANNELS, VENUES, Binance, for_venue, stream_channel
from connectors.record import NAME_RE as _RECORDING_NAME_RE
from connectors.venue import Venue
from connectors.venues import VENUES as LIVE_VENUES
from connectors.venues import venue_spec

log = logging.getLogger(__name__)

FORMATS = ("hftbacktest", "cryptofeed", "ndjson", "csv", "parquet")

#: The columns of a trade file (``v``, ``side`` and ``recv_ms`` may be absent).
TRADE_COLUMNS = TRADE_FIELDS
_READ_COLUMNS = (*TRADE_COLUMNS, "type")
_REQUIRED_COLUMNS = ("symbol", "id", "price", "qty", "ts_ms")

_HFT_PREFIX = {"spot_": "binance", "usdm_": "binance-usdm", "cm_": "binance-coinm"}
_CRYPTOFEED_VENUES = {
    "BINANCE": "binance",
    "BINANCE_US": "binance-us",
    "BINANCE_FUTURES": "binance-usdm",
    "BINANCE_DELIVERY": "binance-coinm",
}
_CRYPTOFEED_NAME_RE = re.compile(r"^(?P<exchange>[A-Za-z0-9_]+)\.ws\.\d+\.\d+$")
#: ``<unix seconds>[.<fraction>]: `` — bounded, so no int() of a huge digit run ever runs.
_CRYPTOFEED_LINE_RE = re.compile(rb"^([0-9]{1,12})(?:\.([0-9]{0,12}))?: ")
_HFT_LINE_RE = re.compile(rb"^[0-9]+ [\[{]")
_STREAM_PREFIX_RE = re.compile(rb'^\s*\{"stream":"([^"]*)"')
_INT_RE = re.compile(r"-?[0-9]{1,19}")
_DIGITS = re.compile(rb"[0-9]{1,25}")
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_PARQUET_BATCH_ROWS = 8192
_MAX_DECIMAL_CHARS = 64
_MAX_DECIMAL_EXPONENT = 30


class ReplayError(CandlewaxError):
    """A replay file became unreadable part way (a damaged or truncated gzip stream, an I/O
    error): ``line`` is the last line read whole."""

    def __init__(self, path: Path, line: int, why: str) -> None:
        super().__init__(
            f"{path} is damaged after line {line} ({why}); everything up to that line was read"
        )
        self.path = path
        self.line = line


@dataclass(slots=True)
class ReplayItem:
    """The trades of one recorded message, its local receive time, and what was rejected."""

    recv_ms: int
    trades: list[Trade]
    rejected: list[DeadLetter] = field(default_factory=list)

    def __iter__(self) -> Iterator[Any]:
        """Unpacks as ``recv_ms, trades, rejected`` (the items ``connectors.publish`` takes)."""
        return iter((self.recv_ms, self.trades, self.rejected))


def iter_file(
    path: str | Path, venue: str | None = None, fmt: str | None = None
) -> Iterator[ReplayItem]:
    """Stream the trades of one recorded file, one :class:`ReplayItem` per message that has any.

    Messages without trades (book updates, acks, heartbeats) produce no item; invalid ones produce
    an item whose ``rejected`` holds the dead letter. Memory is bounded by one line (or one
    Parquet batch), whatever the file size.

    Raises :class:`ConfigError` at once for a missing file, an unknown or undetectable format, a
    venue that cannot be inferred or is not readable, or a trade file without trade columns.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"replay file {path} does not exist (or is not a file)")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown replay format {fmt!r} for {path}; use one of {FORMATS}")
    if fmt in ("hftbacktest", "cryptofeed"):
        venue = _recording_venue(path, fmt, venue)  # fails now, not on the first next()
    elif fmt == "csv":
        _check_columns(path, _csv_header(path), venue)
    elif fmt == "parquet":
        _check_columns(path, _parquet_columns(path), venue)
    log.info("replaying %s as %s (venue %s)", path, fmt, venue or "from records")
    items: Iterator[ReplayItem]
    if fmt == "hftbacktest":
        items = _read_hftbacktest(path, _recording_parser(_recording_venue(path, fmt, venue)))
    elif fmt == "cryptofeed":
        items = _read_cryptofeed(path, for_venue(_recording_venue(path, fmt, venue)))
    else:
        items = {"ndjson": _read_ndjson, "csv": _read_csv, "parquet": _read_parquet}[fmt](
            path, venue
        )
    return _counted(path, items)


def detect_format(path: str | Path) -> str:
    """The format of a replay file, from its name and then its first bytes."""
    path = Path(path)
    name = path.name
    lower = name.lower()
    base = lower.removesuffix(".gz")
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    if base.endswith(".csv"):
        return "csv"
    if base.endswith((".jsonl", ".ndjson", ".json")):
        return "ndjson"
    if _CRYPTOFEED_NAME_RE.match(name):
        return "cryptofeed"
    if _RECORDING_NAME_RE.match(name):
        return "hftbacktest"  # candlewax record's files, whatever their first frame
    try:
        with path.open("rb") as raw:
            if raw.read(4) == _PARQUET_MAGIC:
                return "parquet"
        with _open_binary(path) as stream:
            head = stream.readline(4096)
    except _BROKEN as exc:
        raise ConfigError(f"cannot read the start of {path}: {_why(exc)}") from None
    if _HFT_LINE_RE.match(head):
        return "hftbacktest"
    if b" <-> " in head or _CRYPTOFEED_LINE_RE.match(head):
        return "cryptofeed"
    if head.lstrip().startswith((b"{", b"[")):
        return "ndjson"
    if b"," in head and b"price" in head and b"qty" in head:
        return "csv"
    raise ConfigError(f"cannot tell the format of {path}; pass fmt= one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- venues and files


def _recording_venue(path: Path, fmt: str, venue: str | None) -> str:
    if fmt == "cryptofeed":
        match = _CRYPTOFEED_NAME_RE.match(path.name)
        exchange = match.group("exchange").upper() if match else None
        if exchange is not None and exchange not in _CRYPTOFEED_VENUES:
            raise ConfigError(
                f"{path} is a cryptofeed capture of {exchange}: only Binance captures "
                f"({', '.join(_CRYPTOFEED_VENUES)}) can be replayed so far; other venues' "
                "parsers are not written yet"
            )
        inferred = _CRYPTOFEED_VENUES.get(exchange or "")
    else:
        recorded = _RECORDING_NAME_RE.match(path.name)
        inferred = next(
            (v for prefix, v in _HFT_PREFIX.items() if path.name.lower().startswith(prefix)),
            recorded.group("venue") if recorded else None,
        )
    venue = venue or inferred
    if venue is None:
        raise ConfigError(
            f"cannot infer the venue of {path} from its name; pass venue= one of {_readable(fmt)}"
        )
    if fmt == "hftbacktest" and venue not in VENUES:
        if venue not in LIVE_VENUES:
            raise ConfigError(
                f"{path} ({fmt}): unknown venue {venue!r}; one of {', '.join(_readable(fmt))}"
            )
    elif venue not in VENUES:
        raise ConfigError(
            f"{path} ({fmt}) is read with the Binance parser, but venue {venue!r} is not one of "
            f"{', '.join(VENUES)}; other venues' parsers are not written yet"
        )
    return venue


def _readable(fmt: str) -> tuple[str, ...]:
    """The venues whose files of ``fmt`` can be read."""
    if fmt == "hftbacktest":
        return (*VENUES, *(v for v in LIVE_VENUES if v not in VENUES))
    return VENUES


def _recording_parser(venue: str) -> Venue:
    """The parser of a recording: the Binance family's, or the live venue's."""
    return for_venue(venue) if venue in VENUES else venue_spec(venue).parser()


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, gunzipped on the fly when it starts with the gzip magic."""
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == _GZIP_MAGIC:
        return gzip.open(path, "rb")  # type: ignore[return-value]
    return path.open("rb")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, line without its end)`` streamed, 1-based, blank lines skipped.

    Raises :class:`ReplayError` when the stream breaks off (a truncated or corrupt gzip)."""
    number = 0
    try:
        with _open_binary(path) as stream:
            for number, line in enumerate(stream, start=1):
                line = line.rstrip(b"\r\n")
                if line.strip():
                    yield number, line
    except _BROKEN as exc:
        raise ReplayError(path, number, _why(exc)) from None


#: What a damaged file raises part way: a truncated or corrupt gzip, a failing disk.
_BROKEN = (EOFError, OSError, zlib.error)


def _why(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "the gzip stream ends early: a truncated download?"
    return f"{type(exc).__name__}: {exc}"[:200]


def _counted(path: Path, items: Iterable[ReplayItem]) -> Iterator[ReplayItem]:
    n_items = n_trades = n_rejected = 0
    for item in items:
        n_items += 1
        n_trades += len(item.trades)
        n_rejected += len(item.rejected)
        yield item
    log.info("replayed %s: %d items, %d trades, %d rejected", path, n_items, n_trades, n_rejected)


def _dead(
    reason: str, detail: str, raw: bytes, path: Path, line: int, index: int | None = None
) -> DeadLetter:
    source: dict[str, Any] = {"file": str(path), "line": line}
    if index is not None:  # one item of an array line
        source["index"] = index
    return DeadLetter(reason, detail, raw, source)


# --------------------------------------------------------------------------- recordings


def _read_hftbacktest(path: Path, parser: Venue) -> Iterator[ReplayItem]:
    last_ms = 0
    for number, line in _lines(path):
        stamp, _, raw = line.partition(b" ")
        if not _DIGITS.fullmatch(stamp) or not raw:
            dead = _dead("bad_timestamp", "line is not '<recv ns> <json>'", line, path, number)
            yield ReplayItem(last_ms, [], [dead])
            continue
        last_ms = int(stamp[:19]) // 1_000_000
        if isinstance(parser, Binance):
            item = _binance_item(raw, line, parser, last_ms, path, number)
        else:
            item = _venue_item(raw, line, parser, last_ms, path, number)
        if item is not None:
            yield item


def _read_cryptofeed(path: Path, parser: Binance) -> Iterator[ReplayItem]:
    last_ms = 0
    for number, line in _lines(path):
        match = _CRYPTOFEED_LINE_RE.match(line)
        if match is None:
            if b" <-> " in line or b" <- " in line:
                continue  # connection marker, or a message the client sent
            dead = _dead("bad_timestamp", "line is not '<recv ts>: <msg>'", line, path, number)
            yield ReplayItem(last_ms, [], [dead])
            continue
        whole, frac = match.group(1), match.group(2) or b""
        last_ms = int(whole) * 1000 + int((frac + b"000")[:3])
        item = _binance_item(line[match.end() :], line, parser, last_ms, path, number)
        if item is not None:
            yield item


def _binance_item(
    raw: bytes, line: bytes, parser: Binance, recv_ms: int, path: Path, number: int
) -> ReplayItem | None:
    prefix = _STREAM_PREFIX_RE.match(raw)
    if prefix is not None:
        channel = stream_channel(prefix.group(1).decode("utf-8", "replace"))
        if channel not in TRADE_CHANNELS:
            return None  # depth, bookTicker, kline, ...: no trades, not even worth decoding
    try:
        trades = parser.parse_frame(raw, recv_ms=recv_ms)
    except ParseError as exc:
        return ReplayItem(recv_ms, [], [_dead(exc.reason, exc.detail, line, path, number)])
    return ReplayItem(recv_ms, trades) if trades else None


def _venue_item(
    raw: bytes, line: bytes, parser: Venue, recv_ms: int, path: Path, number: int
) -> ReplayItem | None:
    """One recorded frame of a live venue, read as its connection reads it: control messages
    (acks, pongs, notices) carry no trades, every other frame is parsed."""
    if parser.control(raw) is not None:
        return None
    try:
        trades = parser.parse_frame(raw, recv_ms=recv_ms)
    except ParseError as exc:
        return ReplayItem(recv_ms, [], [_dead(exc.reason, exc.detail, line, path, number)])
    return ReplayItem(recv_ms, trades) if trades else None


# --------------------------------------------------------------------------- our trade files


def _read_ndjson(path: Path, venue: str | None) -> Iterator[ReplayItem]:
    last_ms = 0
    for number, line in _lines(path):
        try:
            obj = loads(line)
        except ParseError as exc:
            yield ReplayItem(last_ms, [], [_dead(exc.reason, exc.detail, line, path, number)])
            continue
        records = obj if isinstance(obj, list) else [obj]
        trades: list[Trade] = []
        rejected: list[DeadLetter] = []
        if len(records) > MAX_ARRAY_ITEMS:
            detail = f"{len(records)} items, at most {MAX_ARRAY_ITEMS}"
            yield ReplayItem(last_ms, [], [_dead("too_large", detail, line, path, number)])
            continue
        for index, record in enumerate(records):
            try:
                trade = _decode_record(_with_venue(record, venue))
            except ParseError as exc:
                where = None if len(records) == 1 else index
                rejected.append(_dead(exc.reason, exc.detail, line, path, number, where))
                continue
            if trade is not None:
                trades.append(trade)
        if trades or rejected:
            last_ms = _item_recv_ms(trades, last_ms)
            yield ReplayItem(last_ms, trades, rejected)


def _read_csv(path: Path, venue: str | None) -> Iterator[ReplayItem]:
    last_ms = 0
    line = 0
    try:
        with _open_binary(path) as binary:
            text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
            reader = csv.reader(text)
            header = [name.strip() for name in next(reader, [])]
            for row in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in row):
                    continue
                if len(row) != len(header):  # a shifted row must not pass as a trade
                    reason = "missing_field" if len(row) < len(header) else "bad_type"
                    detail = f"row has {len(row)} cells, the header {len(header)}"
                    dead = _dead(reason, detail, _csv_line(row), path, line)
                    yield ReplayItem(last_ms, [], [dead])
                    continue
                cells = dict(zip(header, row, strict=True))
                record: dict[str, Any] = {}
                for name in _READ_COLUMNS:
                    value = cells.get(name)
                    if value is None or value == "":
                        continue
                    # Spaces and tabs around a number are CSV style; the number is converted
                    # from exactly the text checked (str.strip would also remove \x1c-\x1f,
                    # which int() refuses: found by the fuzz campaign).
                    number = value.strip(" \t")
                    if name in ("v", "ts_ms", "recv_ms") and _INT_RE.fullmatch(number):
                        record[name] = int(number)
                    else:
                        record[name] = value
                item, last_ms = _record_item(record, venue, last_ms, path, line, row)
                if item is not None:
                    yield item
    except (*_BROKEN, csv.Error) as exc:
        raise ReplayError(path, line, _why(exc)) from None


def _read_parquet(path: Path, venue: str | None) -> Iterator[ReplayItem]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    last_ms = 0
    row_number = 0
    try:
        parquet = pq.ParquetFile(path)
        columns = [name for name in parquet.schema_arrow.names if name in _READ_COLUMNS]
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
            values = {name: _column_values(batch.column(name), name) for name in batch.schema.names}
            for index in range(batch.num_rows):
                row_number += 1
                record = {
                    name: column[index]
                    for name, column in values.items()
                    if column[index] is not None
                }
                item, last_ms = _record_item(record, venue, last_ms, path, row_number, None)
                if item is not None:
                    yield item
    except (*_BROKEN, pa.ArrowException) as exc:
        raise ReplayError(path, row_number, _why(exc)) from None


def _record_item(
    record: dict[str, Any],
    venue: str | None,
    last_ms: int,
    path: Path,
    line: int,
    csv_row: list[str] | None,
) -> tuple[ReplayItem | None, int]:
    try:
        trade = _decode_record(_with_venue(record, venue))
    except ParseError as exc:
        raw = _csv_line(csv_row) if csv_row is not None else orjson.dumps(record, default=str)
        return ReplayItem(last_ms, [], [_dead(exc.reason, exc.detail, raw, path, line)]), last_ms
    if trade is None:
        return None, last_ms
    last_ms = _item_recv_ms([trade], last_ms)
    return ReplayItem(last_ms, [trade]), last_ms


def _with_venue(record: Any, venue: str | None) -> Any:
    if venue and isinstance(record, dict) and not record.get("venue"):
        return {**record, "venue": venue}
    return record


def _item_recv_ms(trades: list[Trade], last_ms: int) -> int:
    if not trades:
        return last_ms
    return max(t.recv_ms if t.recv_ms is not None else t.ts_ms for t in trades)


def _decode_record(record: Any) -> Trade | None:
    """One record of a trade file (the codec's file form); ``None`` for a heartbeat or a
    marker (a replay publishes its own heartbeats; its coverage starts at its first trade)."""
    decoded = decode_record(record, from_file=True)
    return decoded if isinstance(decoded, Trade) else None


# --------------------------------------------------------------------------- csv / parquet


def _csv_header(path: Path) -> list[str]:
    with _open_binary(path) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
        return [name.strip() for name in next(csv.reader(text), [])]


def _csv_line(row: list[str]) -> bytes:
    out = io.StringIO()
    csv.writer(out, lineterminator="").writerow(row)
    return out.getvalue().encode("utf-8")


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"{path} is not a readable Parquet file: {exc}") from exc


def _check_columns(path: Path, columns: list[str], venue: str | None) -> None:
    required = _REQUIRED_COLUMNS if venue else ("venue", *_REQUIRED_COLUMNS)
    missing = [name for name in required if name not in columns]
    if missing:
        raise ConfigError(
            f"{path} lacks the trade column(s) {', '.join(missing)}; a trade file has the "
            f"columns {', '.join(TRADE_COLUMNS)}" + ("" if venue else " (or pass venue=)")
        )


def _column_values(array: Any, name: str) -> list[Any]:
    """Python values of one Arrow column; decimal and float prices/quantities become exact
    decimal strings."""
    import numpy as np
    import pyarrow as pa

    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if name not in ("price", "qty"):
        if pa.types.is_timestamp(kind):
            array = array.cast(pa.timestamp("ms", kind.tz), safe=False).cast(pa.int64())
        return array.to_pylist()
    if pa.types.is_decimal(kind):
        return [None if v is None else format(v, "f") for v in array.to_pylist()]
    if pa.types.is_floating(kind):
        nulls = array.is_null().to_pylist()
        floats = array.to_numpy(zero_copy_only=False)
        return [
            None if null else np.format_float_positional(value, trim="-")
            for value, null in zip(floats, nulls, strict=True)
        ]
    return array.to_pylist()
