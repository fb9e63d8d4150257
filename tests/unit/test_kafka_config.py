"""The Kafka client configs every process builds: what is ours, what the user's settings win."""

from __future__ import annotations

from candlewax.kafka import Connection, consumer_config, read_ahead


def test_consumers_wait_briefly_for_data_and_the_flow_reads_ahead_two_polls() -> None:
    plain = consumer_config(Connection("127.0.0.1:9092"), "g")
    # A broker that answers a waiting fetch only at its end (Tansu) adds at most this much.
    assert plain["fetch.wait.max.ms"] == 10 and plain["group.id"] == "g"
    assert "queued.min.messages" not in plain  # librdkafka's own defaults elsewhere
    flow = consumer_config(Connection("127.0.0.1:9092"), "g", read_ahead(10_000))
    assert flow["queued.min.messages"] == 20_000
    assert flow["queued.max.messages.kbytes"] == 8_192
    # A full queue must not postpone the next fetch by librdkafka's default second.
    assert flow["fetch.queue.backoff.ms"] == 5


def test_the_users_properties_win_over_every_default_but_the_group() -> None:
    user = Connection(
        "127.0.0.1:9092",
        {"fetch.wait.max.ms": "500", "queued.max.messages.kbytes": "65536", "group.id": "x"},
    )
    conf = consumer_config(user, "candlewax-flow", read_ahead(10_000))
    assert conf["fetch.wait.max.ms"] == "500"
    assert conf["queued.max.messages.kbytes"] == "65536"
    assert conf["queued.min.messages"] == 20_000
    assert conf["group.id"] == "candlewax-flow"  # what the client cannot work without
