"""Keep each ``trades`` partition's state on the worker that reads it.

Bytewax places the two independently. The source's partitions go to workers by position:
the i-th of the sorted partition names to worker ``i % workers``. A stateful step's key goes
to the worker ``h(key) % workers``, where h is Rust's ``DefaultHasher`` (SipHash-1-3 with zero
keys) over the key as ``str`` hashes it in Rust: its UTF-8 bytes, then 0xFF. Keyed by the bare
partition number, the state would land wherever that hash says: with 2 workers the keys
``"0"``…``"3"`` all land on worker 1, which then does all the work while worker 0 only reads
and ships batches to it.

So the bars step's key for partition ``p`` is ``"p"`` when that already hashes to the reader,
else the first of ``"p/1"``, ``"p/2"``, … that does (on average 1 of ``workers`` tries). With one
worker it is always ``"p"``. The key depends on the number of workers: a recovery store is
therefore resumed with the number of workers that wrote it (docs/deploy.md).

Both rules are Bytewax 0.21's; tests/unit/test_routing.py checks them against a real Bytewax
cluster of several workers, so an upgrade that changes them fails there.
"""

from __future__ import annotations

from collections.abc import Sequence

_MASK = (1 << 64) - 1


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def siphash13(data: bytes, k0: int = 0, k1: int = 0) -> int:
    """SipHash-1-3 (one compression round, three finalization rounds) of ``data``."""
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def sip_round() -> None:
        nonlocal v0, v1, v2, v3
        v0 = (v0 + v1) & _MASK
        v1 = _rotl(v1, 13) ^ v0
        v0 = _rotl(v0, 32)
        v2 = (v2 + v3) & _MASK
        v3 = _rotl(v3, 16) ^ v2
        v0 = (v0 + v3) & _MASK
        v3 = _rotl(v3, 21) ^ v0
        v2 = (v2 + v1) & _MASK
        v1 = _rotl(v1, 17) ^ v2
        v2 = _rotl(v2, 32)

    whole = len(data) - len(data) % 8
    for i in range(0, whole, 8):
        m = int.from_bytes(data[i : i + 8], "little")
        v3 ^= m
        sip_round()
        v0 ^= m
    last = ((len(data) & 0xFF) << 56) | int.from_bytes(data[whole:], "little")
    v3 ^= last
    sip_round()
    v0 ^= last
    v2 ^= 0xFF
    for _ in range(3):
        sip_round()
    return v0 ^ v1 ^ v2 ^ v3


def key_owner(key: str, workers: int) -> int:
    """The worker a Bytewax stateful step sends ``key`` to."""
    return siphash13(key.encode() + b"\xff") % workers


def part_reader(part: str, parts: Sequence[str], workers: int) -> int:
    """The worker a Bytewax ``FixedPartitionedSource`` builds partition ``part`` on."""
    return sorted(set(parts)).index(part) % workers


def state_key(part: str, parts: Sequence[str], workers: int) -> str:
    """The stateful key for partition ``part`` that the worker reading it owns."""
    reader = part_reader(part, parts, workers)
    key, n = part, 0
    while key_owner(key, workers) != reader:
        n += 1
        key = f"{part}/{n}"
    return key
