"""The recorder's files (connectors/record.py): names, hourly rotation on an injected clock,
the frame rules for hostile frames, crash safety, write errors — and that replay reads them."""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from candlewax.codec import MAX_MESSAGE_BYTES
from candlewax.errors import CandlewaxError, ConfigError, ParseError
from connectors.binance import Binance
from connectors.record import NAME_RE, FrameWriter, check_directory, file_name
from connectors.replay import ReplayError, detect_format, iter_file
from tests.unit.test_venues import OKX_FILE, cryptofeed_messages

#: 2024-08-08 23:00:00 UTC in ns; the hour before midnight (the date changes at the rotation).
H23 = int(datetime(2024, 8, 8, 23, tzinfo=UTC).timestamp()) * 1_000_000_000
SEC = 1_000_000_000
TRADE = (
    b'{"stream":"btcusdt@trade","data":{"e":"trade","E":1723161255343,"s":"BTCUSDT",'
    b'"t":3735683259,"p":"61837.63000000","q":"0.02000000","T":1723161255342,"m":true,"M":true}}'
)


class Clock:
    """A monotonic clock the test moves."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def read_lines(path: Path) -> list[tuple[int, bytes]]:
    out = []
    for line in gzip.decompress(path.read_bytes()).split(b"\n")[:-1]:
        stamp, _, payload = line.partition(b" ")
        out.append((int(stamp), payload))
    return out


def test_file_names_are_the_utc_hour_and_say_the_venue() -> None:
    assert file_name("binance", H23 // 3_600_000_000_000) == "binance-20240808-23.gz"
    assert file_name("binance-usdm", 0, 2) == "binance-usdm-19700101-00-2.gz"
    for name, venue in [("binance-20240808-23.gz", "binance"),
                        ("binance-usdm-20240808-23-12.gz", "binance-usdm"),
                        ("okx-20240808-00.gz.part", "okx")]:  # fmt: skip
        match = NAME_RE.match(name)
        assert match is not None and match.group("venue") == venue
    for name in ["binance-2024080-23.gz", "binance-20240808-23.gz.tmp", "spot_btcusdt_20240808.gz",
                 "Binance-20240808-23.gz", "-20240808-23.gz"]:  # fmt: skip
        assert NAME_RE.match(name) is None, name


def test_files_rotate_at_the_hour_of_the_receive_clock(tmp_path: Path) -> None:
    clock = Clock()
    with FrameWriter(tmp_path, "binance", monotonic=clock) as writer:
        writer.frame(H23 + 3599 * SEC, TRADE)
        assert [p.name for p in tmp_path.iterdir()] == ["binance-20240808-23.gz.part"]
        writer.frame(H23 + 3600 * SEC, b'{"a":1}')  # midnight: the next file, the next day
        # Late by the clock (another connection, a clock step back): into the open file.
        writer.frame(H23 + 3599 * SEC + 999, b'{"late":true}')
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "binance-20240808-23.gz", "binance-20240809-00.gz.part"]  # fmt: skip
        writer.tick(H23 + 7199 * SEC)  # still the same hour: nothing happens
        assert (tmp_path / "binance-20240809-00.gz.part").exists()
        writer.tick(H23 + 7200 * SEC)  # the hour is over, even without a frame: finished
        assert sorted(p.name for p in tmp_path.iterdir()) == [
            "binance-20240808-23.gz", "binance-20240809-00.gz"]  # fmt: skip
    assert read_lines(tmp_path / "binance-20240808-23.gz") == [(H23 + 3599 * SEC, TRADE)]
    assert read_lines(tmp_path / "binance-20240809-00.gz") == [
        (H23 + 3600 * SEC, b'{"a":1}'), (H23 + 3599 * SEC + 999, b'{"late":true}')]  # fmt: skip
    assert writer.stats.files == [tmp_path / "binance-20240808-23.gz",
                                  tmp_path / "binance-20240809-00.gz"]  # fmt: skip
    assert (writer.stats.frames, writer.stats.skipped) == (3, {})
    # Frames after close are counted, not written.
    assert writer.frame(H23, TRADE) is False and writer.stats.skipped == {"closed": 1}


def test_an_earlier_runs_files_of_the_same_hour_are_never_overwritten(tmp_path: Path) -> None:
    (tmp_path / "binance-20240808-23.gz").write_bytes(b"earlier run")
    (tmp_path / "binance-20240808-23-1.gz.part").write_bytes(b"a crashed run")
    with FrameWriter(tmp_path, "binance") as writer:
        writer.frame(H23 + 5, TRADE)
    assert (tmp_path / "binance-20240808-23.gz").read_bytes() == b"earlier run"
    assert (tmp_path / "binance-20240808-23-1.gz.part").read_bytes() == b"a crashed run"
    assert read_lines(tmp_path / "binance-20240808-23-2.gz") == [(H23 + 5, TRADE)]
    # Another recorder finishing first takes a name this one was about to use: the next free.
    with FrameWriter(tmp_path, "binance") as writer:
        writer.frame(H23 + 6, TRADE)
        (tmp_path / "binance-20240808-23-3.gz").write_bytes(b"another recorder")
    assert read_lines(tmp_path / "binance-20240808-23-4.gz") == [(H23 + 6, TRADE)]
    assert not list(tmp_path.glob("*-4.gz.part"))


def test_hostile_frames_follow_the_documented_rules(tmp_path: Path) -> None:
    pretty = orjson.dumps(orjson.loads(TRADE), option=orjson.OPT_INDENT_2).replace(b"\n", b"\r\n")
    broken_string = b'{"s":"BTC\nUSDT"}'  # a raw line break inside a string: invalid JSON
    frames = [
        pretty,  # written, CR/LF as tabs: the same JSON
        broken_string,  # written, LF as a tab: still the same invalid JSON
        b"\x00\x01 binary but UTF-8 \xe2\x82\xac",  # written as it is
        bytearray(b'{"a":"\xc3\xa9"}'),  # any bytes-like frame
        b"",  # empty: skipped
        b'{"a":"\xff"}',  # not UTF-8: skipped
        b"\xed\xa0\x80",  # a UTF-16 surrogate in UTF-8: not UTF-8, skipped
        b"x" * (MAX_MESSAGE_BYTES + 1),  # too large: skipped
        b"x" * MAX_MESSAGE_BYTES,  # at the limit: written
    ]
    with FrameWriter(tmp_path, "binance") as writer:
        written = [writer.frame(H23 + i, frame) for i, frame in enumerate(frames)]
    assert written == [True, True, True, True, False, False, False, False, True]
    assert writer.stats.skipped == {"empty": 1, "not_utf8": 2, "too_large": 1}
    assert writer.stats.retabbed == 2
    (path,) = writer.stats.files
    lines = read_lines(path)
    assert [stamp - H23 for stamp, _ in lines] == [0, 1, 2, 3, 8]  # one frame, one line
    payloads = [payload for _, payload in lines]
    assert payloads[0] == pretty.replace(b"\r", b"\t").replace(b"\n", b"\t")
    assert orjson.loads(payloads[0]) == orjson.loads(pretty) == orjson.loads(TRADE)
    for original, recorded in [(pretty, payloads[0]), (broken_string, payloads[1])]:
        assert _outcome(recorded) == _outcome(original)  # accepted alike or rejected alike
    assert _outcome(broken_string) == "json"
    assert payloads[2:4] == [frames[2], bytes(frames[3])]
    assert payloads[4] == frames[8]


def _outcome(frame: bytes) -> object:
    try:
        return Binance().parse_frame(frame)
    except ParseError as exc:
        return exc.reason


def test_every_flush_is_readable_after_a_crash(tmp_path: Path) -> None:
    """kill -9 between flushes: the .part holds every line up to the last flush, and replay
    reads them all before it says the file ends early."""
    clock = Clock()
    writer = FrameWriter(tmp_path, "binance", flush_s=1.0, monotonic=clock)
    for i in range(5):
        writer.frame(H23 + i, TRADE)
    clock.now = 1.0
    writer.tick(H23 + 5)  # due: flushed
    writer.frame(H23 + 6, b'{"after":"the flush"}')  # lost in the crash
    (part,) = tmp_path.glob("*.part")
    crashed = tmp_path / "crashed" / part.name
    crashed.parent.mkdir()
    shutil.copy(part, crashed)  # the file as a crash leaves it: no gzip trailer
    assert zlib.decompressobj(31).decompress(crashed.read_bytes()).count(b"\n") == 5
    assert detect_format(crashed) == "hftbacktest"
    got = []
    with pytest.raises(ReplayError, match="after line 5"):
        got.extend(t.id for item in iter_file(crashed) for t in item.trades)
    assert got == ["3735683259"] * 5
    writer.close()
    assert [s - H23 for s, _ in read_lines(writer.stats.files[0])] == [0, 1, 2, 3, 4, 6]


def test_a_write_error_stops_the_recorder_with_one_clear_message(tmp_path: Path) -> None:
    out = tmp_path / "gone"
    out.mkdir()
    writer = FrameWriter(out, "binance")
    out.rmdir()  # the directory disappears under the recorder
    assert writer.frame(H23, TRADE) is False
    assert writer.frame(H23 + 1, TRADE) is False
    assert writer.stats.skipped == {"write_failed": 2}
    with pytest.raises(CandlewaxError, match=r"cannot write the recording .*gone"):
        writer.tick(H23 + 2)
    with pytest.raises(CandlewaxError, match="cannot write"):
        writer.close()


def test_an_unusable_directory_is_refused_before_recording(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ConfigError, match=r"record directory .*a-file/rec is not writable"):
        check_directory(tmp_path / "a-file" / "rec")
    check_directory(tmp_path / "new" / "dir")  # created
    assert (tmp_path / "new" / "dir").is_dir() and not list((tmp_path / "new" / "dir").iterdir())
    with pytest.raises(ConfigError, match="cannot name"):
        FrameWriter(tmp_path, "../evil")


def test_an_okx_recording_replays_with_the_okx_parser(tmp_path: Path) -> None:
    """A recording of a venue other than Binance: read as its live connection reads it —
    acks and pongs skipped, every trade push parsed, receive times kept."""
    messages = list(cryptofeed_messages(OKX_FILE))
    with FrameWriter(tmp_path, "okx") as writer:
        for recv_s, raw in messages:
            writer.frame(round(recv_s * 1_000_000) * 1000, raw)
        writer.frame(round(messages[-1][0] * 1_000_000) * 1000, b"pong")  # OKX's text pong
    paths = writer.stats.files
    assert all(NAME_RE.match(p.name) for p in paths)
    items = [item for p in paths for item in iter_file(p)]
    assert not [d for item in items for d in item.rejected]
    got = [(item.recv_ms, t) for item in items for t in item.trades]
    expected = []
    for recv_s, raw in messages:  # decoded independently, with the standard library
        obj = json.loads(raw)
        if obj.get("arg", {}).get("channel") == "trades" and "data" in obj:
            for d in obj["data"]:
                expected.append((round(recv_s * 1_000_000) // 1000, d["instId"].replace("-", ""),
                                 d["tradeId"], d["px"], d["sz"], d["side"], int(d["ts"])))  # fmt: skip
    assert [(ms, t.symbol, t.id, t.price, t.qty, t.side, t.ts_ms) for ms, t in got] == expected
    assert len(expected) == 74 and {t.venue for _, t in got} == {"okx"}
    # A recording's name says its venue; a wrong or unknown one is refused at once.
    with pytest.raises(ConfigError, match="'kraken'"):
        iter_file(paths[0], venue="kraken")
    renamed = tmp_path / "x.gz"
    shutil.copy(paths[0], renamed)
    with pytest.raises(ConfigError, match="venue"):
        iter_file(renamed, fmt="hftbacktest")
    trades = [t for item in iter_file(renamed, venue="okx", fmt="hftbacktest") for t in item.trades]
    assert trades == [t for item in iter_file(paths[0]) for t in item.trades]
