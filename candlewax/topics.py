"""Topic names and idempotent topic creation (``candlewax topics ensure``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from confluent_kafka import KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

from candlewax.errors import BrokerError
from candlewax.kafka import admin_config
from candlewax.settings import Settings

log = logging.getLogger(__name__)

TRADES, BARS, ALERTS, DEADLETTER = "trades", "bars", "alerts", "deadletter"
#: A gateway user's private stream (codec ``UserEvent``), keyed by the user id: the alerts routed
#: to the user's gateway destinations and the delivery outcomes of those alerts (docs/alerts.md).
USER_EVENTS = "user_events"
ALL = (TRADES, BARS, ALERTS, DEADLETTER, USER_EVENTS)


def ensure_topics(settings: Settings, names: tuple[str, ...] = ALL) -> dict[str, str]:
    """Create missing topics; existing ones are left as they are. Returns name → created|exists.

    ``trades``, ``bars`` and ``alerts`` get ``settings.partitions`` partitions (all keyed by
    venue:SYMBOL), and so does ``user_events`` (keyed by user id); ``deadletter`` gets one.
    """
    admin = AdminClient(admin_config(settings.connection))
    config: Mapping[str, str] = {}
    if settings.retention_ms is not None:
        config = {"retention.ms": str(settings.retention_ms)}
    wanted = [
        NewTopic(
            settings.topic(name),
            num_partitions=1 if name == DEADLETTER else settings.partitions,
            replication_factor=settings.replication_factor,
            config=dict(config),
        )
        for name in names
    ]
    result: dict[str, str] = {}
    for topic, future in admin.create_topics(wanted, request_timeout=15).items():
        try:
            future.result(timeout=20)
            result[topic] = "created"
            log.info("created topic %s", topic)
        except Exception as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[topic] = "exists"
            else:
                raise BrokerError(
                    f"could not create topic {topic} on {settings.bootstrap_servers}: {exc}"
                ) from None
    return result
