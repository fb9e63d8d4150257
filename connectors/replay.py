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
import threading
import zlib
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Full, Queue
from typing import IO, Any

import orjson
import polars as pl

from candlewax.codec import (
    MAX_ARRAY_ITEMS,
    TRADE_FIELDS,
    DeadLetter,
    Trade,
    decode_record,
)
from candlewax.codec.columns import file_trades, trade_values
from candlewax.codec.strictjson import loads
from candlewax.errors import CandlewaxError, ConfigError, ParseError
from connectors.binance import TRADE_CHANNELS, VENUES, Binance, for_venue, stream_channel
from connectors.publish import TIMES_SCHEMA, TradeBatch
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
#: Lines (rows, frames) of a :func:`iter_batches` batch; an NDJSON batch also ends once it holds
#: _BATCH_BYTES (a file of long lines: memory stays bounded by a batch, or by one long line).
BATCH_LINES = 16_384
_BATCH_BYTES = 16 << 20
#: What :func:`_line_blocks` reads of a gzip file at a time: the buffer size of the reads
#: :func:`_lines` does (so both stop at the same place in a damaged file); of a plain file, more.
_GZIP_READ_BYTES = io.DEFAULT_BUFFER_SIZE
_PLAIN_READ_BYTES = 1 << 20


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
    path, fmt, venue = _checked(path, venue, fmt)
    return _counted(path, _items(path, fmt, venue))


def iter_batches(
    path: str | Path,
    venue: str | None = None,
    fmt: str | None = None,
    *,
    batch_lines: int = BATCH_LINES,
) -> Iterator[TradeBatch]:
    """The items of :func:`iter_file`, in :class:`~connectors.publish.TradeBatch` es of about
    ``batch_lines`` lines (rows, frames): what ``candlewax replay`` publishes.

    NDJSON files are decoded a batch at a time: a line that is a canonical trade (or a canonical
    array of them) is proven so by one pattern over the batch
    (:func:`candlewax.codec.columns.file_trades`) and published as it is; every other line is read
    as :func:`iter_file` reads it. The other formats are read by :func:`iter_file`'s readers and
    encoded a batch at a time. Either way the batches hold exactly the items, trades, dead letters
    and receive times :func:`iter_file` gives, and raise what it raises, where it raises it.
    """
    if batch_lines < 1:
        raise ValueError(f"batch_lines must be >= 1, got {batch_lines}")
    path, fmt, venue = _checked(path, venue, fmt)
    if fmt in _BATCH_READERS:
        batches = _BATCH_READERS[fmt](path, venue, batch_lines)
    else:
        batches = _item_batches(_items(path, fmt, venue), batch_lines)
    return _ahead(_counted_batches(path, batches))


def _checked(path: str | Path, venue: str | None, fmt: str | None) -> tuple[Path, str, str | None]:
    """The file, its format and venue, once everything that can be checked before reading is."""
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
    return path, fmt, venue


def _items(path: Path, fmt: str, venue: str | None) -> Iterator[ReplayItem]:
    if fmt == "hftbacktest":
        return _read_hftbacktest(path, _recording_parser(_recording_venue(path, fmt, venue)))
    if fmt == "cryptofeed":
        return _read_cryptofeed(path, for_venue(_recording_venue(path, fmt, venue)))
    readers = {"ndjson": _read_ndjson, "csv": _read_csv, "parquet": _read_parquet}
    return readers[fmt](path, venue)


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


def _counted_batches(path: Path, batches: Iterable[TradeBatch]) -> Generator[TradeBatch]:
    n_items = n_trades = n_rejected = 0
    for batch in batches:
        n_items += len(batch.ends)
        n_trades += len(batch.values)
        n_rejected += sum(len(letters) for letters in batch.rejected.values())
        yield batch
    log.info("replayed %s: %d items, %d trades, %d rejected", path, n_items, n_trades, n_rejected)


def _ahead(batches: Generator[TradeBatch], depth: int = 2) -> Iterator[TradeBatch]:
    """``batches``, read ``depth`` ahead by a thread of their own: reading and decoding (Polars,
    which releases the GIL) overlap the publishing of the batch before. Whatever the reader
    raises is raised here, after the batches read before it; closing this generator stops the
    reader (and closes its file)."""
    queue: Queue[tuple[str, Any]] = Queue(maxsize=depth)
    closed = threading.Event()

    def put(kind: str, value: Any) -> bool:
        while not closed.is_set():
            try:
                queue.put((kind, value), timeout=0.1)
                return True
            except Full:
                continue
        return False

    def read() -> None:
        try:
            for batch in batches:
                if not put("batch", batch):
                    break
            else:
                put("end", None)
        except BaseException as exc:  # handed over whole: ReplayError, or a bug's traceback
            put("error", exc)
        finally:
            batches.close()

    reader = threading.Thread(target=read, name="replay-reader", daemon=True)
    reader.start()
    try:
        while True:
            kind, value = queue.get()
            if kind == "batch":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        closed.set()
        reader.join()


def _item_batches(items: Iterable[ReplayItem], size: int) -> Iterator[TradeBatch]:
    """Items of a reader that makes them one by one, encoded ``size`` items at a time."""
    batch: list[tuple[int, list[Trade], list[DeadLetter]]] = []
    for item in items:
        batch.append((item.recv_ms, item.trades, item.rejected))
        if len(batch) >= size:
            yield TradeBatch.from_items(batch)
            batch = []
    if batch:
        yield TradeBatch.from_items(batch)


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
        trades, rejected = _ndjson_line(line, number, path, venue)
        if trades or rejected:
            last_ms = _item_recv_ms(trades, last_ms)
            yield ReplayItem(last_ms, trades, rejected)


def _ndjson_line(
    line: bytes, number: int, path: Path, venue: str | None
) -> tuple[list[Trade], list[DeadLetter]]:
    """The trades and dead letters of one line of an NDJSON file (the exact reading)."""
    try:
        obj = loads(line)
    except ParseError as exc:
        return [], [_dead(exc.reason, exc.detail, line, path, number)]
    records = obj if isinstance(obj, list) else [obj]
    if len(records) > MAX_ARRAY_ITEMS:
        detail = f"{len(records)} items, at most {MAX_ARRAY_ITEMS}"
        return [], [_dead("too_large", detail, line, path, number)]
    trades: list[Trade] = []
    rejected: list[DeadLetter] = []
    for index, record in enumerate(records):
        try:
            trade = _decode_record(_with_venue(record, venue))
        except ParseError as exc:
            where = None if len(records) == 1 else index
            rejected.append(_dead(exc.reason, exc.detail, line, path, number, where))
            continue
        if trade is not None:
            trades.append(trade)
    return trades, rejected


def _line_blocks(path: Path, size: int) -> Iterator[tuple[int, list[bytes]]]:
    """``(number of the first line, lines)`` of about ``size`` raw lines (without their
    ``\n``; blank ones included), the file's lines as :func:`_lines` reads them.

    A gzip file is read in the same 8 KiB pieces as :func:`_lines` reads it (its buffered
    reads), so a damaged file gives up at the same place: every whole line read before the
    damage comes out, then :class:`ReplayError` names the last of them."""
    first = 1  # number of the first line not yet handed out
    lines: list[bytes] = []
    held = 0  # bytes in lines
    partial: list[bytes] = []  # the start of a line not yet ended
    broken: BaseException | None = None
    try:
        with _open_binary(path) as stream:
            read = stream.read1  # type: ignore[attr-defined]
            piece = _GZIP_READ_BYTES if isinstance(stream, gzip.GzipFile) else _PLAIN_READ_BYTES
            while True:
                chunk = read(piece)
                if not chunk:
                    break
                if b"\n" not in chunk:
                    partial.append(chunk)
                    continue
                pieces = chunk.split(b"\n")
                if partial:
                    partial.append(pieces[0])
                    pieces[0] = b"".join(partial)
                    held += len(pieces[0]) - len(partial[-1])
                    partial = []
                tail = pieces.pop()
                if tail:
                    partial.append(tail)
                lines.extend(pieces)
                held += len(chunk) - len(tail)
                if len(lines) >= size or held >= _BATCH_BYTES:
                    yield first, lines
                    first += len(lines)
                    lines = []
                    held = 0
    except _BROKEN as exc:
        broken = exc
    if partial and broken is None:
        lines.append(b"".join(partial))  # the last line, without its end
    if lines:
        yield first, lines
    if broken is not None:
        raise ReplayError(path, first + len(lines) - 1, _why(broken)) from None


def _ndjson_batches(path: Path, venue: str | None, size: int) -> Iterator[TradeBatch]:
    last_ms = 0
    for first, lines in _line_blocks(path, size):
        batch = _ndjson_batch(lines, first, path, venue, last_ms)
        if batch is not None:
            last_ms = batch.recv_ms[-1]
            yield batch


def _ndjson_batch(
    lines: list[bytes], first: int, path: Path, venue: str | None, last_ms: int
) -> TradeBatch | None:
    """The items of some consecutive lines (the first numbered ``first``), as one batch."""
    found = file_trades(lines)
    rows = found.rows
    if not found.slow and not found.arrays:  # every line one canonical trade: the common case
        times = rows.select(*TIMES_SCHEMA)
        recv = times.select(pl.col("recv_ms").fill_null(pl.col("ts_ms"))).to_series()
        return TradeBatch(
            values=lines,
            keys=rows["key"].to_list(),
            times=times,
            ends=list(range(1, len(lines) + 1)),
            recv_ms=recv.to_list(),
        )
    # Some lines are read one by one: their trades join the canonical ones in line order.
    if found.arrays:
        fast = rows.select(
            "msg", "key", pl.col("item").cast(pl.Binary).alias("value"), *TIMES_SCHEMA
        )
    else:
        raw = pl.Series("value", lines, dtype=pl.Binary)
        fast = rows.select("msg", "key", raw.gather(rows["msg"]), *TIMES_SCHEMA)
    exact: dict[int, tuple[list[Trade], list[DeadLetter]]] = {}
    for index in found.slow:
        line = lines[index].rstrip(b"\r\n")
        if line.strip():  # a blank line is no message
            exact[index] = _ndjson_line(line, first + index, path, venue)
    return _merged(fast, exact, last_ms)


_FAST_SCHEMA: dict[str, pl.DataType] = {
    "msg": pl.UInt32(),
    "key": pl.String(),
    "value": pl.Binary(),
    **TIMES_SCHEMA,
}


def _merged(
    fast: pl.DataFrame, exact: dict[int, tuple[list[Trade], list[DeadLetter]]], last_ms: int
) -> TradeBatch | None:
    """One batch of the trades read column-wise (``fast``: columns :data:`_FAST_SCHEMA`, ``msg``
    the line's or row's index in the batch) and of the lines read one by one (``exact``: index →
    their trades and dead letters), in line order; ``last_ms`` the receive time of the item before
    the batch."""
    columns: dict[str, list[Any]] = {name: [] for name in _FAST_SCHEMA}
    rejected_at: dict[int, list[DeadLetter]] = {}
    for index, (trades, rejected) in exact.items():
        if rejected:
            rejected_at[index] = rejected
        for trade in trades:
            columns["msg"].append(index)
            columns["key"].append(trade.key)
            columns["value"].append(trade.encode())
            columns["venue"].append(trade.venue)
            columns["ts_ms"].append(trade.ts_ms)
            columns["recv_ms"].append(trade.recv_ms)
    merged = pl.concat([fast.select(*_FAST_SCHEMA), pl.DataFrame(columns, schema=_FAST_SCHEMA)])
    merged = merged.sort("msg", maintain_order=True)
    # Items: the lines with trades or dead letters, in order; each one's receive time is the
    # newest of its trades' (recv_ms, else ts_ms), or the item's before it.
    own = merged.group_by("msg", maintain_order=True).agg(
        n=pl.len(), recv=pl.col("recv_ms").fill_null(pl.col("ts_ms")).max()
    )
    items = (
        pl.DataFrame({"msg": sorted(rejected_at)}, schema={"msg": _FAST_SCHEMA["msg"]})
        .join(own, on="msg", how="full", coalesce=True)
        .sort("msg")
        .with_columns(pl.col("n").fill_null(0), pl.col("recv").forward_fill().fill_null(last_ms))
    )
    if not items.height:
        return None
    msgs = items["msg"].to_list()
    return TradeBatch(
        values=merged["value"].to_list(),
        keys=merged["key"].to_list(),
        times=merged.select(*TIMES_SCHEMA),
        ends=items["n"].cast(pl.Int64).cum_sum().to_list(),
        recv_ms=items["recv"].to_list(),
        rejected={i: rejected_at[msg] for i, msg in enumerate(msgs) if msg in rejected_at},
    )


def _read_csv(path: Path, venue: str | None) -> Iterator[ReplayItem]:
    header = _csv_header(path)
    last_ms = 0
    for line, row in _csv_rows(path):
        read = _csv_row(header, row, line, path, venue)
        if read is not None and (read[0] or read[1]):
            last_ms = _item_recv_ms(read[0], last_ms)
            yield ReplayItem(last_ms, *read)


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """``(line number, cells)`` of the rows after the header; :class:`ReplayError` (naming the
    last line read) where the file breaks off."""
    line = 0
    try:
        with _open_binary(path) as binary:
            text = io.TextIOWrapper(binary, encoding="utf-8", errors="replace", newline="")
            reader = csv.reader(text)
            next(reader, [])  # the header
            for row in reader:
                line = reader.line_num
                yield line, row
    except (*_BROKEN, csv.Error) as exc:
        raise ReplayError(path, line, _why(exc)) from None


def _csv_row(
    header: list[str], row: list[str], line: int, path: Path, venue: str | None
) -> tuple[list[Trade], list[DeadLetter]] | None:
    """The trade or dead letter of one CSV row (the exact reading); None for a blank row."""
    if not any(cell.strip() for cell in row):
        return None
    if len(row) != len(header):  # a shifted row must not pass as a trade
        reason = "missing_field" if len(row) < len(header) else "bad_type"
        detail = f"row has {len(row)} cells, the header {len(header)}"
        return [], [_dead(reason, detail, _csv_line(row), path, line)]
    cells = dict(zip(header, row, strict=True))
    record: dict[str, Any] = {}
    for name in _READ_COLUMNS:
        value = cells.get(name)
        if value is None or value == "":
            continue
        # Spaces and tabs around a number are CSV style; the number is converted from exactly
        # the text checked (str.strip would also remove \x1c-\x1f, which int() refuses: found
        # by the fuzz campaign).
        number = value.strip(" \t")
        if name in ("v", "ts_ms", "recv_ms") and _INT_RE.fullmatch(number):
            record[name] = int(number)
        else:
            record[name] = value
    return _record_result(record, venue, path, line, row)


def _csv_batches(path: Path, venue: str | None, size: int) -> Iterator[TradeBatch]:
    header = _csv_header(path)
    last_ms = 0
    rows: list[list[str]] = []
    lines: list[int] = []
    broken: ReplayError | None = None
    try:
        for line, row in _csv_rows(path):
            rows.append(row)
            lines.append(line)
            if len(rows) >= size:
                batch = _csv_batch(header, rows, lines, path, venue, last_ms)
                rows, lines = [], []
                if batch is not None:
                    last_ms = batch.recv_ms[-1]
                    yield batch
    except ReplayError as exc:
        broken = exc
    if rows:
        batch = _csv_batch(header, rows, lines, path, venue, last_ms)
        if batch is not None:
            yield batch
    if broken is not None:
        raise broken


def _csv_batch(
    header: list[str],
    rows: list[list[str]],
    lines: list[int],
    path: Path,
    venue: str | None,
    last_ms: int,
) -> TradeBatch | None:
    """Rows of a CSV file as one batch: each row whose message (written from its cells as the
    exact reading would make it) is a canonical trade is that trade; the others are read one by
    one."""
    where = {name: index for index, name in enumerate(header)}  # a name twice: the last counts
    whole = [index for index, row in enumerate(rows) if len(row) == len(header)]
    fast = pl.DataFrame(schema=_FAST_SCHEMA)
    slow = sorted(set(range(len(rows))) - set(whole))
    if whole:
        picked = rows if len(whole) == len(rows) else [rows[index] for index in whole]
        cells = list(zip(*picked, strict=True))
        frame = pl.DataFrame(
            {
                name: pl.Series(name, cells[where[name]], dtype=pl.String)
                for name in _READ_COLUMNS
                if name in where
            }
        )
        text = frame.select(_csv_message(frame.columns, venue)).to_series()
        found = file_trades(text)
        msg = pl.Series("msg", whole, dtype=pl.UInt32).gather(found.rows["msg"])
        value = text.gather(found.rows["msg"]).cast(pl.Binary).alias("value")
        fast = found.rows.select(msg, "key", value, *TIMES_SCHEMA)
        slow = sorted({*slow, *(whole[index] for index in found.slow)})
    exact: dict[int, tuple[list[Trade], list[DeadLetter]]] = {}
    for index in slow:
        read = _csv_row(header, rows[index], lines[index], path, venue)
        if read is not None:
            exact[index] = read
    return _merged(fast, exact, last_ms)


def _csv_message(columns: list[str], venue: str | None) -> pl.Expr:
    """The canonical message of each CSV row, as the exact reading would decode the row: empty
    cells are absent (a venue then fills in), times are the cells without spaces and tabs
    around them. A row with a ``v`` other than ``1``, or a ``type``, gets no message (it is
    read one by one)."""

    def cell(name: str) -> pl.Expr:
        return pl.col(name) if name in columns else pl.lit("", dtype=pl.String)

    return _message(
        venue=pl.when(cell("venue") != "").then(cell("venue")).otherwise(pl.lit(venue or "")),
        symbol=cell("symbol"),
        id=cell("id"),
        price=cell("price"),
        qty=cell("qty"),
        side=pl.when(cell("side") != "").then(cell("side")),
        ts_ms=cell("ts_ms").str.strip_chars(" \t"),
        recv_ms=pl.when(cell("recv_ms") != "").then(cell("recv_ms").str.strip_chars(" \t")),
        plain=cell("v").is_in(["", "1"]) & (cell("type") == ""),
    )


def _message(
    *,
    venue: pl.Expr,
    symbol: pl.Expr,
    id: pl.Expr,
    price: pl.Expr,
    qty: pl.Expr,
    side: pl.Expr,
    ts_ms: pl.Expr,
    recv_ms: pl.Expr,
    plain: pl.Expr,
) -> pl.Expr:
    """``Trade.encode()`` of each row's fields as text (``side`` and ``recv_ms`` null when
    absent), or "" where ``plain`` is false or a field is missing: no canonical trade."""
    text = trade_values(venue, symbol, id, price, qty, side, ts_ms, recv_ms)
    return pl.when(plain.fill_null(False)).then(text).otherwise(pl.lit("")).fill_null("")


def _read_parquet(path: Path, venue: str | None) -> Iterator[ReplayItem]:
    last_ms = 0
    for first, values in _parquet_values(path, _PARQUET_BATCH_ROWS):
        for index in range(len(next(iter(values.values()), []))):
            record = {
                name: column[index] for name, column in values.items() if column[index] is not None
            }
            trades, rejected = _record_result(record, venue, path, first + index, None)
            if trades or rejected:
                last_ms = _item_recv_ms(trades, last_ms)
                yield ReplayItem(last_ms, trades, rejected)


def _parquet_values(path: Path, size: int) -> Iterator[tuple[int, dict[str, list[Any]]]]:
    """``(number of the first row, Python values by column)`` of at most ``size`` rows at a
    time, read Arrow batch by Arrow batch (:func:`_column_values`); :class:`ReplayError`
    (naming the rows read) where the file breaks off."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    row_number = 0
    try:
        parquet = pq.ParquetFile(path)
        columns = [name for name in parquet.schema_arrow.names if name in _READ_COLUMNS]
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH_ROWS, columns=columns):
            values = {name: _column_values(batch.column(name), name) for name in batch.schema.names}
            for lo in range(0, batch.num_rows, size):
                yield row_number + lo + 1, {name: v[lo : lo + size] for name, v in values.items()}
            row_number += batch.num_rows
    except (*_BROKEN, pa.ArrowException) as exc:
        raise ReplayError(path, row_number, _why(exc)) from None


def _parquet_batches(path: Path, venue: str | None, size: int) -> Iterator[TradeBatch]:
    last_ms = 0
    for first, values in _parquet_values(path, min(size, _PARQUET_BATCH_ROWS)):
        batch = _parquet_batch(values, first, path, venue, last_ms)
        if batch is not None:
            last_ms = batch.recv_ms[-1]
            yield batch


#: Polars types of the Parquet columns a row's message can be written from (after
#: _column_values); a batch with another type in some column is read row by row.
_INTEGERS = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
_WRITABLE = {
    "venue": (pl.String,),
    "symbol": (pl.String,),
    "side": (pl.String,),
    "type": (pl.String,),
    "id": (pl.String, *_INTEGERS),
    "price": (pl.String, *_INTEGERS),
    "qty": (pl.String, *_INTEGERS),
    "ts_ms": _INTEGERS,
    "recv_ms": _INTEGERS,
    "v": _INTEGERS,
}


def _parquet_batch(
    values: dict[str, list[Any]], first: int, path: Path, venue: str | None, last_ms: int
) -> TradeBatch | None:
    """Rows of a Parquet file as one batch: each row whose message (written from its values as
    the exact reading would make it) is a canonical trade is that trade; the others are read one
    by one."""
    n = len(next(iter(values.values()), []))
    fast = pl.DataFrame(schema=_FAST_SCHEMA)
    slow: list[int] = list(range(n))
    frame = _parquet_frame(values)
    if frame is not None and n:
        text = frame.select(_parquet_message(frame, venue)).to_series()
        found = file_trades(text)
        value = text.gather(found.rows["msg"]).cast(pl.Binary).alias("value")
        fast = found.rows.select("msg", "key", value, *TIMES_SCHEMA)
        slow = found.slow
    exact: dict[int, tuple[list[Trade], list[DeadLetter]]] = {}
    for index in slow:
        record = {
            name: column[index] for name, column in values.items() if column[index] is not None
        }
        exact[index] = _record_result(record, venue, path, first + index, None)
    return _merged(fast, exact, last_ms)


def _parquet_frame(values: dict[str, list[Any]]) -> pl.DataFrame | None:
    """The batch's values as a frame of writable columns, or None."""
    series = []
    for name, column in values.items():
        try:
            one = pl.Series(name, column)
        except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError):
            return None
        if one.dtype == pl.Null:
            one = one.cast(pl.String)
        if not isinstance(one.dtype, _WRITABLE[name]):
            return None
        series.append(one)
    return pl.DataFrame(series)


def _parquet_message(frame: pl.DataFrame, venue: str | None) -> pl.Expr:
    """The canonical message of each Parquet row, as the exact reading would decode the row:
    null values are absent (a venue then fills in, also for ""), integers are their digits (an
    id only within 0..2**63-1). A row with a ``v`` other than 1, or a ``type``, gets no message
    (it is read one by one)."""
    columns = frame.schema

    def text(name: str) -> pl.Expr:
        if name not in columns:
            return pl.lit(None, dtype=pl.String)
        return pl.col(name).cast(pl.String)

    id_ = text("id")
    if "id" in columns and columns["id"] != pl.String:
        id_ = pl.when(pl.col("id").is_between(0, 2**63 - 1)).then(id_)
    plain = pl.lit(True)
    if "v" in columns:
        plain = plain & (pl.col("v").is_null() | (pl.col("v") == 1))
    if "type" in columns:
        plain = plain & pl.col("type").is_null()
    given = text("venue")
    return _message(
        venue=pl.when(given.is_not_null() & (given != "")).then(given).otherwise(pl.lit(venue)),
        symbol=text("symbol"),
        id=id_,
        price=text("price"),
        qty=text("qty"),
        side=text("side"),
        ts_ms=text("ts_ms"),
        recv_ms=text("recv_ms"),
        plain=plain,
    )


def _record_result(
    record: dict[str, Any], venue: str | None, path: Path, line: int, csv_row: list[str] | None
) -> tuple[list[Trade], list[DeadLetter]]:
    """The trade (none for a heartbeat or a marker) or the dead letter of one record of a
    trade file."""
    try:
        trade = _decode_record(_with_venue(record, venue))
    except ParseError as exc:
        raw = _csv_line(csv_row) if csv_row is not None else orjson.dumps(record, default=str)
        return [], [_dead(exc.reason, exc.detail, raw, path, line)]
    return ([trade] if trade is not None else []), []


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


_BATCH_READERS = {"ndjson": _ndjson_batches, "csv": _csv_batches, "parquet": _parquet_batches}
