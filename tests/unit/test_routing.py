"""flows/routing.py against the real thing: SipHash-1-3 against CPython's own (``hash`` of bytes
with PYTHONHASHSEED=0 is SipHash-1-3 with zero keys), and where a Bytewax cluster of several
workers really builds each source partition and really sends each stateful key."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import threading
from typing import Any

import pytest
from bytewax import operators as op
from bytewax.dataflow import Dataflow
from bytewax.inputs import (
    DynamicSource,
    FixedPartitionedSource,
    StatefulSourcePartition,
    StatelessSourcePartition,
)
from bytewax.testing import cluster_main

from flows.routing import key_owner, part_reader, siphash13, state_key


def test_siphash13_is_cpythons() -> None:
    rng = random.Random(7)
    samples = [rng.randbytes(n) for n in range(1, 40) for _ in range(3)]
    samples += [b"0\xff", b"12/3\xff", "é".encode()]
    code = "import json,sys; print(json.dumps([hash(bytes.fromhex(h)) & (2**64-1) for h in json.load(sys.stdin)]))"  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run([sys.executable, "-c", code], input=json.dumps([s.hex() for s in samples]),
                         capture_output=True, text=True, env=env, check=True)  # fmt: skip
    assert [siphash13(s) for s in samples] == json.loads(out.stdout)


def where_bytewax_puts(workers: int, parts: list[str], keys: list[str]) -> dict[str, Any]:
    """Run a cluster of ``workers`` threads: which worker builds each partition of a fixed
    partitioned source, and which worker's stateful step receives each key."""
    lock = threading.Lock()
    worker_of_thread: dict[int, int] = {}
    readers: dict[str, int] = {}
    owners: dict[str, int] = {}

    class Part(StatefulSourcePartition[tuple[str, int], None]):
        def __init__(self, name: str) -> None:
            self.name, self.done = name, False

        def next_batch(self) -> list[tuple[str, int]]:
            if self.done:
                raise StopIteration
            self.done = True
            with lock:
                readers[self.name] = threading.get_native_id()
            return [(k, 1) for k in keys] if self.name == parts[0] else []

        def snapshot(self) -> None:
            return None

    class Source(FixedPartitionedSource[tuple[str, int], None]):
        def list_parts(self) -> list[str]:
            return parts

        def build_part(self, step_id: str, for_part: str, resume_state: None) -> Part:
            return Part(for_part)

    class Whoami(StatelessSourcePartition[int]):
        def __init__(self, index: int) -> None:
            self.index, self.done = index, False

        def next_batch(self) -> list[int]:
            if self.done:
                raise StopIteration
            self.done = True
            with lock:
                worker_of_thread[threading.get_native_id()] = self.index
            return []

    class Workers(DynamicSource[int]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Whoami:
            return Whoami(worker_index)

    def owner(state: None, value: int) -> tuple[None, int]:
        return None, threading.get_native_id()

    def record(item: tuple[str, int]) -> None:
        with lock:
            owners[item[0]] = item[1]

    flow = Dataflow("routing")
    op.input("workers", flow, Workers())
    keyed = op.stateful_map("owner", op.input("parts", flow, Source()), owner)
    op.inspect("record", keyed, lambda _step, item: record(item))
    cluster_main(flow, [], 0, worker_count_per_proc=workers)
    return {
        "readers": {p: worker_of_thread[t] for p, t in readers.items()},
        "owners": {k: worker_of_thread[t] for k, t in owners.items()},
    }


@pytest.mark.parametrize(("workers", "partitions"), [(2, 4), (2, 3), (3, 7), (4, 12), (5, 16)])
def test_each_partitions_state_stays_on_the_worker_that_reads_it(
    workers: int, partitions: int
) -> None:
    parts = [str(p) for p in range(partitions)]
    keys = [state_key(p, parts, workers) for p in parts] + parts + [f"{p}/1" for p in parts]
    seen = where_bytewax_puts(workers, parts, keys)
    assert seen["readers"] == {p: part_reader(p, parts, workers) for p in parts}
    assert seen["owners"] == {k: key_owner(k, workers) for k in keys}
    for p in parts:  # the point of it all
        assert seen["owners"][state_key(p, parts, workers)] == seen["readers"][p]
    # The bare partition keys would not do (this is what the routing works around).
    if (workers, partitions) == (2, 4):
        assert {seen["owners"][p] for p in parts} == {1}


def test_one_worker_keeps_the_bare_partition_keys() -> None:
    parts = [str(p) for p in range(24)]
    assert [state_key(p, parts, 1) for p in parts] == parts
