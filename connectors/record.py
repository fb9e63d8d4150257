"""``candlewax record VENUE``: a venue's raw websocket frames into hourly gzip files.

The connections are the live connector's (:class:`connectors.live.LiveConnector` with a
``recorder``): the same connect, subscribe, ping, stale watchdog, reconnect and rotation. What
they receive goes to a :class:`FrameWriter`, which writes the hftbacktest line format that
:func:`connectors.replay.iter_file` reads:

    <receive time, ns since the epoch, UTC> <the frame's bytes>\\n

**Which frames, and how** — every input is untrusted, and one frame must stay one line:

- text and binary frames are written as received, byte for byte; pings, pongs and close frames
  are not (they are liveness, not data). Control messages (acks, errors, ``serverShutdown``)
  are data and are written.
- CR and LF bytes inside a frame become TAB (``\\t``), and the frame is counted as
  ``retabbed``. In JSON a raw TAB is, exactly like a raw CR or LF, insignificant whitespace
  between tokens and forbidden inside a string, so the line decodes to the same value — or is
  rejected for the same reason — as the frame did.
- skipped, counted by reason and logged (first one, then every 1,000th), the file untouched:
  ``empty`` frames (nothing to replay), ``not_utf8`` payloads (the format is text; the parsers
  reject them anyway — a *text* frame that is not UTF-8 never gets here: websocket-client drops
  the connection, which reconnects), ``too_large`` ones over ``max_frame_bytes`` (by default
  :data:`~candlewax.codec.MAX_MESSAGE_BYTES`, the bound every parser applies).

**Files.** ``DIR/<venue>-<YYYYMMDD>-<HH>.gz``, the UTC hour of the receive clock. A file is
written as ``<name>.part`` and renamed when its hour is over (the first frame of a later hour,
or the supervisor's tick after the hour boundary), or when the recorder stops — so a file named
``.gz`` is always complete gzip. The gzip stream is flushed (a sync flush) every ``flush_s``
seconds, so a crash (kill -9, power loss) loses at most that much: the ``.part`` left behind
holds every line up to its last flush. A name already taken — a ``.gz`` or ``.part`` of an
earlier run in the same hour, or another recorder's — is never overwritten: the next free of
``<name>-1.gz``, ``<name>-2.gz``, ... is used. A frame stamped before the open file's hour (the
wall clock stepped back, or two connections racing at the boundary) goes into the open file
with its own stamp: files are only ever rotated forward, never reopened.

**Reconnects** are not written into the files (they hold only what the socket delivered, so
hftbacktest's own tools read them): they are logged and counted by the connector like those of
``candlewax connect``, and a gap shows as a gap in the receive times. A recorder does no REST
backfill: trades missed while disconnected are missing from the recording.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from gzip import GzipFile
from pathlib import Path

from candlewax.codec import MAX_MESSAGE_BYTES
from candlewax.errors import CandlewaxError, ConfigError

log = logging.getLogger(__name__)

HOUR_NS = 3_600 * 1_000_000_000
PART = ".part"
#: ``binance-20240808-23.gz``, ``binance-usdm-20240808-23-1.gz`` (and their ``.part``).
NAME_RE = re.compile(
    r"^(?P<venue>[a-z0-9][a-z0-9-]*?)-(?P<day>[0-9]{8})-(?P<hour>[0-9]{2})(?:-[0-9]+)?\.gz(?:\.part)?$"
)
_RETAB = bytes.maketrans(b"\r\n", b"\t\t")


@dataclass
class RecordStats:
    frames: int = 0
    #: Payload bytes written (before compression).
    bytes: int = 0
    #: Frames whose CR/LF bytes were written as TABs.
    retabbed: int = 0
    #: Frames not written, by reason: empty, not_utf8, too_large, write_failed, closed.
    skipped: dict[str, int] = field(default_factory=dict)
    #: Finished files, in the order they were closed.
    files: list[Path] = field(default_factory=list)


def file_name(venue: str, hour: int, seq: int = 0) -> str:
    """The name of ``venue``'s file for the hour ``hour`` (hours since the epoch), the
    ``seq``-th when earlier ones of that hour exist."""
    start = datetime.fromtimestamp(hour * 3600, tz=UTC)
    suffix = f"-{seq}" if seq else ""
    return f"{venue}-{start:%Y%m%d-%H}{suffix}.gz"


def check_directory(directory: Path) -> None:
    """Fail at start, before connecting, when ``directory`` cannot hold the files."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise ConfigError(
            f"record directory {directory} is not writable ({exc.strerror or exc}): choose "
            "another with --out, or fix its permissions"
        ) from None


class _Open:
    """The file of one hour being written: ``<name>.part`` until :meth:`finish`."""

    def __init__(self, directory: Path, venue: str, hour: int) -> None:
        self.directory, self.venue, self.hour = directory, venue, hour
        self.seq = 0
        while True:
            final = directory / file_name(venue, hour, self.seq)
            part = final.with_name(final.name + PART)
            if not final.exists():
                try:
                    raw = part.open("xb")  # exclusive: another run's .part is never touched
                except FileExistsError:
                    pass
                else:
                    break
            self.seq += 1
        self.final, self.part, self.raw = final, part, raw
        self.gz = GzipFile(filename=final.name, mode="wb", fileobj=raw, compresslevel=6)
        self.frames = 0

    def write(self, recv_ns: int, payload: bytes) -> None:
        self.gz.write(b"%d " % recv_ns)
        self.gz.write(payload)
        self.gz.write(b"\n")
        self.frames += 1

    def flush(self) -> None:
        self.gz.flush()  # a sync flush: every line so far can be read back

    def finish(self) -> Path:
        """Close the gzip stream, sync it to disk and give it its final name — never over an
        existing file (another recorder's of the same hour): then the next free ``-N``."""
        self.gz.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()
        while True:
            final = self.directory / file_name(self.venue, self.hour, self.seq)
            try:
                os.link(self.part, final)  # unlike a rename, fails when final exists
            except FileExistsError:
                self.seq += 1
                continue
            except OSError:  # a filesystem without hard links: check, then rename
                if final.exists():
                    self.seq += 1
                    continue
                os.replace(self.part, final)
                return final
            self.part.unlink()
            return final

    def abandon(self) -> None:
        """After a write error: close what can be closed; the ``.part`` stays as it is."""
        for close in (self.gz.close, self.raw.close):
            with contextlib.suppress(OSError):
                close()


class FrameWriter:
    """Frames → ``DIR/<venue>-<YYYYMMDD>-<HH>.gz`` (see the module docstring). Thread-safe:
    every connection of a recorder writes to the one open file, in arrival order.

    ``clock`` (ns since the epoch) and ``monotonic`` (seconds) are injectable for tests."""

    def __init__(
        self,
        directory: str | Path,
        venue: str,
        flush_s: float = 1.0,
        max_frame_bytes: int = MAX_MESSAGE_BYTES,
        clock: Callable[[], int] = time.time_ns,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if not NAME_RE.match(file_name(venue, 0)):
            raise ConfigError(f"venue {venue!r} cannot name a recording file")
        self.directory = Path(directory)
        self.venue = venue
        self.flush_s = flush_s
        self.max_frame_bytes = max_frame_bytes
        self.clock = clock
        self.monotonic = monotonic
        self.stats = RecordStats()
        #: The first write error: the recorder stops on it (:meth:`tick` raises it).
        self.error: str | None = None
        self._file: _Open | None = None
        self._last_flush = monotonic()
        self._closed = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ the sink

    def frame(self, recv_ns: int, payload: bytes | bytearray | memoryview) -> bool:
        """Write one frame received at ``recv_ns``; False when it was skipped (counted)."""
        data = bytes(payload)
        with self._lock:
            if self._closed or self.error is not None:
                return self._skip("closed" if self._closed else "write_failed", len(data))
            if not data:
                return self._skip("empty", 0)
            if len(data) > self.max_frame_bytes:
                return self._skip("too_large", len(data))
            try:
                data.decode("utf-8")
            except UnicodeDecodeError:
                return self._skip("not_utf8", len(data))
            if b"\n" in data or b"\r" in data:
                data = data.translate(_RETAB)
                self.stats.retabbed += 1
            if recv_ns < 0:
                raise ValueError(f"receive time {recv_ns} ns is before the epoch")
            hour = recv_ns // HOUR_NS
            try:
                if self._file is not None and hour > self._file.hour:
                    self._finish()
                if self._file is None:
                    self._file = _Open(self.directory, self.venue, hour)
                    log.info("recording %s into %s", self.venue, self._file.part)
                self._file.write(recv_ns, data)
                if self.monotonic() - self._last_flush >= self.flush_s:
                    self._flush()
            except OSError as exc:
                self._failed(exc)
                return self._skip("write_failed", len(data))
            self.stats.frames += 1
            self.stats.bytes += len(data)
            return True

    def tick(self, now_ns: int | None = None) -> None:
        """Flush when due; finish the open file once its hour is over. Raises the first write
        error, so the recorder stops instead of running on without writing."""
        now_ns = self.clock() if now_ns is None else now_ns
        with self._lock:
            file = self._file
            if file is not None and now_ns // HOUR_NS > file.hour:
                self._safely(self._finish)
            elif file is not None and self.monotonic() - self._last_flush >= self.flush_s:
                self._safely(self._flush)
        self._raise_error()

    def close(self) -> None:
        """Finish the open file (idempotent); frames after this are skipped as ``closed``."""
        with self._lock:
            self._closed = True
            self._safely(self._finish)
        self._raise_error()

    def __enter__(self) -> FrameWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()
        self._last_flush = self.monotonic()

    def _finish(self) -> None:
        file = self._file
        if file is None:
            return
        path = file.finish()
        self._file = None
        self.stats.files.append(path)
        self._last_flush = self.monotonic()
        log.info("recorded %d frames into %s", file.frames, path)

    def _safely(self, action: Callable[[], None]) -> None:
        try:
            action()
        except OSError as exc:
            self._failed(exc)

    def _raise_error(self) -> None:
        if self.error is not None:
            raise CandlewaxError(self.error)

    def _failed(self, exc: OSError) -> None:
        file, self._file = self._file, None
        where = file.part if file is not None else self.directory
        if self.error is None:
            self.error = (
                f"cannot write the recording {where}: {exc.strerror or exc}; every line up to "
                "the last flush is in it"
            )
            log.error("%s", self.error)
        if file is not None:
            file.abandon()

    def _skip(self, reason: str, size: int) -> bool:
        n = self.stats.skipped[reason] = self.stats.skipped.get(reason, 0) + 1
        if n % 1000 == 1:
            log.warning(
                "%s: frame of %d bytes not recorded (%s; %d such so far)",
                self.venue,
                size,
                reason,
                n,
            )
        return False
