"""bench.servers with tiny numbers: every client gets every message, in order, through real server
and client processes; and its frame parser on streams cut anywhere."""

from __future__ import annotations

import struct

import pytest

from bench.servers import FrameReader, kline_message, run_case


def server_frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    if n < 126:
        head = bytes([0x80 | opcode, n])
    elif n < 65536:
        head = bytes([0x80 | opcode, 126]) + struct.pack("!H", n)
    else:
        head = bytes([0x80 | opcode, 127]) + struct.pack("!Q", n)
    return head + payload


def test_frames_are_parsed_whatever_the_chunks() -> None:
    payloads = [b"", b"x" * 125, kline_message(7).encode(), b"y" * 70_000, b"z"]
    stream = b"".join(server_frame(1, p) for p in payloads) + server_frame(8, b"\x03\xe8")
    for step in (1, 3, 364, len(stream)):
        reader = FrameReader()
        frames = []
        for i in range(0, len(stream), step):
            frames += reader.feed(stream[i : i + step])
        assert [f[2] for f in frames] == [*payloads, b"\x03\xe8"]
        assert [f[0] for f in frames] == [1] * len(payloads) + [8]
        assert not reader.buf


@pytest.mark.parametrize(
    ("candidate", "mode", "client_impl"),
    [
        ("uvicorn/websockets-sansio", "max", "raw"),
        ("uvicorn/websockets-sansio", "steady", "websockets"),
        ("websockets/broadcast", "max", "raw"),
    ],
)
def test_every_client_receives_every_message_in_order(
    candidate: str, mode: str, client_impl: str
) -> None:
    row = run_case(
        candidate,
        mode,
        clients=5,
        messages=50,
        rate=1000,
        client_impl=client_impl,
        budget_s=8,
    )
    # received[i] is client i's count of messages 0, 1, 2… in sequence (-1 on any gap/disorder)
    assert row["received"] == [50] * 5
    assert row["delivered"] == row["expected"] == 250
    assert row["out_of_order"] == row["lost"] == row["errors"] == 0
    assert row["deliveries_per_s"] > 0 and row["p50_ms"] >= 0
