"""The gateway destination: alerts to a gateway user's private ``user`` stream.

``candlewax serve`` gives a logged-in user (an API key id, ``desk-1``) the records of topic
``user_events`` keyed by that user (codec :class:`~candlewax.codec.UserEvent`):

- ``type: "alert"`` — an alert the notifier's routes sent to a ``{type = "gateway", user = ...}``
  channel: :class:`GatewayUser` produces it and reports success only once Kafka's delivery report
  confirmed it; a failed or missing report is a retryable failure (the notifier backs off, then
  dead-letters ``notify_unavailable`` after ``max_retry_s``);
- ``type: "delivery"`` — the final outcome of such an alert on each of its destinations
  (delivered, digested, dead_lettered, duplicate), published by the notifier's main loop through
  :meth:`UserEvents.publish`, which never blocks and never raises: a record Kafka did not take is
  counted (``candlewax_notify_user_events_total{type,outcome="error"}``) and logged once per
  change between working and failing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import httpx
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from candlewax import metrics
from candlewax.codec import Alert, UserEvent
from candlewax.kafka import Connection, producer_config
from sinks.notify.channels import OK, RETRY, Destination, Payload, Result
from sinks.notify.ratelimit import RateLimiter

log = logging.getLogger(__name__)

#: The least time a send waits for Kafka's delivery report (``message.timeout.ms`` of the
#: producer, unless the kafka properties set one): a broker's first answer about a topic can take
#: seconds, which an HTTP ``timeout_s`` of 0.5 s would turn into needless retries.
MIN_TIMEOUT_S = 5.0


def _error_text(err: KafkaError | None) -> str:
    if err is None:
        return ""
    return f"{err.name()}: {err.str()}"[:200]


class UserEvents:
    """The notifier's producer of ``user_events`` (idempotent, ``acks=all``: the project's
    :func:`~candlewax.kafka.producer_config`), made on first use. Thread-safe: gateway workers
    :meth:`send` alert events from their threads, the main loop :meth:`publish`\\ es outcomes."""

    def __init__(self, connection: Connection, topic: str, timeout_s: float) -> None:
        self.connection = connection
        self.topic = topic
        self.timeout_s = max(timeout_s, MIN_TIMEOUT_S)
        self._producer: Producer | None = None
        self._make_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._failing = False
        #: Delivery events Kafka confirmed / did not take (tests, logs).
        self.published = 0
        self.failed = 0

    def _client(self) -> Producer:
        with self._make_lock:
            if self._producer is None:
                conf = producer_config(self.connection)
                if "message.timeout.ms" not in self.connection.properties:
                    conf["message.timeout.ms"] = int(self.timeout_s * 1000)
                self._producer = Producer(conf)
            return self._producer

    @staticmethod
    def _count(kind: str, ok: bool, topic: str) -> None:
        metrics.NOTIFY_USER_EVENTS.labels(kind, "ok" if ok else "error").inc()
        metrics.PRODUCED.labels(topic, "ok" if ok else "error").inc()

    # ------------------------------------------------------------------ alert events (blocking)

    def send(self, events: Sequence[UserEvent]) -> str | None:
        """Produce ``events`` and wait for Kafka's delivery report of each one: None when every
        one was confirmed, else what went wrong (a short text without secrets)."""
        if not events:
            return None
        reports: list[KafkaError | None] = []
        lock = threading.Lock()

        def report(err: KafkaError | None, msg: Message) -> None:
            with lock:
                reports.append(err)
            self._count("alert", err is None, self.topic)

        deadline = time.monotonic() + self.timeout_s + 2.0
        produced = 0
        problem: str | None = None
        try:
            producer = self._client()
            for event in events:
                while True:
                    try:
                        producer.produce(
                            self.topic, event.encode(), event.user.encode(), on_delivery=report
                        )
                        produced += 1
                        break
                    except BufferError:  # the local queue is full: serve reports, try again
                        if time.monotonic() > deadline:
                            raise
                        producer.poll(0.05)
        except (BufferError, KafkaException) as exc:
            problem = f"user_events: not produced ({type(exc).__name__}: {str(exc)[:200]})"
            for _ in range(len(events) - produced):
                self._count("alert", False, self.topic)
            if produced == 0:
                return problem
        while True:
            with lock:
                got = list(reports)
            if len(got) >= produced:
                break
            if time.monotonic() > deadline:
                return f"user_events: no delivery report within {self.timeout_s:.0f} s"
            producer.poll(0.05)
        failed = [err for err in got if err is not None]
        if failed:
            return f"user_events: {len(failed)} not delivered ({_error_text(failed[0])})"
        return problem

    # ------------------------------------------------------------------ outcomes (never block)

    def publish(self, event: UserEvent) -> None:
        """Hand ``event`` to the producer and return at once. Never raises: a record that could
        not be produced or that Kafka refused is counted and logged (once per state change)."""
        try:
            self._client().produce(
                self.topic, event.encode(), event.user.encode(), on_delivery=self._published
            )
        except Exception as exc:  # a full local queue, a Kafka error, an unencodable record
            self._published_one(f"not produced ({type(exc).__name__}: {str(exc)[:200]})")

    def _published(self, err: KafkaError | None, msg: Message) -> None:
        self._published_one(None if err is None else _error_text(err))

    def _published_one(self, error: str | None) -> None:
        self._count("delivery", error is None, self.topic)
        with self._state_lock:
            if error is None:
                self.published += 1
            else:
                self.failed += 1
            changed = (error is not None) != self._failing
            self._failing = error is not None
        if not changed:
            return
        if error is not None:
            log.warning(
                "delivery outcomes to %s are failing (%s): counted in "
                "candlewax_notify_user_events_total; alerts are delivered as before",
                self.topic,
                error,
            )
        else:
            log.info("delivery outcomes to %s are published again", self.topic)

    def poll(self) -> None:
        """Serve delivery reports (the main loop calls it each round; it does not wait)."""
        producer = self._producer
        if producer is not None:
            producer.poll(0)

    def close(self, timeout_s: float = 5.0) -> None:
        """Wait up to ``timeout_s`` for what is still in flight; what is left is counted lost."""
        with self._make_lock:
            producer, self._producer = self._producer, None
        if producer is None:
            return
        try:
            left = producer.flush(timeout_s)
        except Exception as exc:  # pragma: no cover - flush reports, it does not raise
            log.warning("user_events producer: %s", exc)
            return
        if left:
            for _ in range(left):
                self._count("delivery", False, self.topic)
            log.warning("%d record(s) to %s were not confirmed before stopping", left, self.topic)


class GatewayUser(Destination):
    """Alerts of one gateway user: ``type: "alert"`` UserEvents on ``user_events``, keyed by the
    user, each confirmed by Kafka before it counts as delivered. A batch the notifier folds into
    a digest (a storm) is produced as the same individual alert events, in one go."""

    kind = "gateway"
    per_request = 500

    def __init__(
        self, channel: str, user: str, limiter: RateLimiter, events: UserEvents | None = None
    ) -> None:
        super().__init__(channel, channel, limiter, None)
        self.user = user
        #: The producer: the notifier that runs this destination connects it (its Kafka).
        self.events = events

    def payloads(self, alerts: Sequence[Alert]) -> list[Payload]:
        n = self.per_request
        return [Payload({"alerts": list(alerts[i : i + n])}) for i in range(0, len(alerts), n)]

    def post(self, client: httpx.Client, payload: Payload) -> Result:
        now = int(time.time() * 1000)
        alerts: list[Alert] = payload.body["alerts"]
        if self.events is None:
            return Result(RETRY, "user_events: no producer (not connected by a notifier)")
        problem = self.events.send([UserEvent.of_alert(self.user, a, now) for a in alerts])
        if problem is None:
            return Result(OK)
        return Result(RETRY, problem)
