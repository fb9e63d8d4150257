"""The notifier: a consumer group on ``alerts`` that delivers every alert once, within the limits.

Threads: the main thread polls Kafka, routes each alert to its destinations' queues, records
outcomes and commits offsets; one worker thread per destination sends.

- **Rate limits** hold on the platform's clock (:mod:`sinks.notify.ratelimit`); a Telegram bot's
  30/s is shared by its chats.
- **Digests**: when a send slot opens and the queue is longer than ``max_delay_s`` worth of sends,
  everything queued goes out as one digest message instead of falling further behind.
- **Answers**: 429 / WeCom 45009 → no sends to that destination until ``retry_after`` (or one
  rate window), then the same message again; 5xx, timeouts, WeCom -1 → capped jittered backoff for
  up to ``max_retry_s``, then dead-letter (``notify_unavailable``); 400/403/93000 → dead-letter at
  once (``notify_rejected``), after one plain-text retry for a Telegram markup error.
- **Exactly once, as far as HTTP allows**: an outcome is written to the SQLite store (and dead
  letters confirmed by Kafka) before the offset moves; the committed offset of a partition is the
  first alert not yet finished on *every* destination. A restart skips what the store has. The one
  window left is a crash between the platform's answer and the store write: that message may be
  sent again (webhooks get the alert id as ``X-Candlewax-Id`` to deduplicate).
- **Gateway users** (:mod:`sinks.notify.gateway`): an alert routed to a gateway user goes to the
  ``user_events`` topic like a message to any other destination; every final outcome of such an
  alert, on each of its destinations, is also published there for each of its gateway users
  (``type: "delivery"``), without ever holding up or failing this loop.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from candlewax import metrics
from candlewax.backoff import Backoff
from candlewax.codec import Alert, DeadLetter, UserEvent
from candlewax.codec.records import MAX_CHANNEL
from candlewax.errors import ParseError
from candlewax.kafka import TrackedProducer, consumer_config
from candlewax.logs import SECRETS
from candlewax.settings import Settings
from candlewax.topics import ALERTS, DEADLETTER, USER_EVENTS
from sinks.notify import channels
from sinks.notify.channels import Destination
from sinks.notify.config import NotifyConfig
from sinks.notify.gateway import GatewayUser, UserEvents
from sinks.notify.store import DeliveredStore

log = logging.getLogger(__name__)

DELIVERED = "delivered"
DEAD_LETTERED = "dead_lettered"
#: Dead-letter reason by outcome detail; everything else the platform refused.
_DEAD_REASONS = {"unavailable": "notify_unavailable", "worker_error": "notify_error"}
_NOT_LABEL = re.compile(r"[^A-Za-z0-9._:-]")


def _label(text: str) -> str:
    """A delivery event's ``reason``: the outcome's short label, in the codec's charset."""
    return _NOT_LABEL.sub("_", text)[:64]


@dataclass(slots=True)
class _Item:
    alert: Alert
    raw: bytes
    partition: int
    offset: int
    received: float  # monotonic
    #: The gateway users the alert was routed to: they get its outcomes on every destination.
    users: tuple[str, ...] = ()


@dataclass(slots=True)
class _Done:
    dest: Destination
    items: list[_Item]
    outcome: str  # delivered | dead_lettered
    reason: str = ""
    detail: str = ""
    finished: float = field(default_factory=time.monotonic)


class _Worker(threading.Thread):
    """Sends one destination's queue, in order, within its limits."""

    def __init__(
        self,
        dest: Destination,
        client: httpx.Client,
        config: NotifyConfig,
        done: Callable[[_Done], None],
    ) -> None:
        super().__init__(name=f"notify-{dest.key}", daemon=True)
        self.dest = dest
        self.client = client
        self.config = config
        self._done = done
        self.queue: collections.deque[_Item] = collections.deque()
        self.cond = threading.Condition()
        self.stopping = threading.Event()
        self.blocked_until = 0.0
        self.next_digest_at = 0.0
        self._state = "ok"  # for one log line per state change
        shared = dest.shared.min_interval_s if dest.shared else 0.0
        self.interval_s = max(dest.limiter.min_interval_s, shared)
        self._depth = metrics.NOTIFY_QUEUE_DEPTH.labels(dest.key)

    def put(self, item: _Item) -> None:
        with self.cond:
            self.queue.append(item)
            self._depth.set(len(self.queue))
            self.cond.notify()

    def stop(self) -> None:
        self.stopping.set()
        with self.cond:
            self.cond.notify()

    def run(self) -> None:
        """Send until stopped. An error in rendering or sending never ends the worker: the
        alerts in hand are dead-lettered with the error (so their offsets can move), it is
        logged and counted, and the next alert is taken."""
        while not self.stopping.is_set():
            with self.cond:
                while not self.queue and not self.stopping.is_set():
                    self.cond.wait(0.5)
            if self.stopping.is_set() or not self._wait_until_open():
                return
            if self._digesting() and not self._wait(self.next_digest_at):
                return
            with self.cond:
                batch = self._take()
                self._depth.set(len(self.queue))
            try:
                self._deliver(batch)
            except Exception as exc:
                metrics.NOTIFY_WORKER_ERRORS.labels(self.dest.channel).inc()
                log.exception("%s: delivering %d alert(s) failed", self.dest.key, len(batch))
                self._finish(batch, DEAD_LETTERED, "worker_error", f"{type(exc).__name__}: {exc}")
            if len(batch) > 1:
                # Digests go out at the steady rate (window / count), not in a burst: a storm
                # spends the burst allowance on a few large digests rather than many fragments.
                self.next_digest_at = time.monotonic() + self.interval_s

    def restarted(self) -> _Worker:
        """A new thread for this destination, taking over its queue and its waits."""
        worker = _Worker(self.dest, self.client, self.config, self._done)
        with self.cond:
            worker.queue = self.queue
        worker.blocked_until, worker.next_digest_at = self.blocked_until, self.next_digest_at
        return worker

    def _digesting(self) -> bool:
        n = len(self.queue)
        return n > 1 and n * self.interval_s > self.config.settings.max_delay_s

    def _take(self) -> list[_Item]:
        """The head alone, or — when the queue would wait longer than max_delay_s — all of it."""
        if not self._digesting():
            return [self.queue.popleft()]
        batch = list(self.queue)
        self.queue.clear()
        return batch

    def _wait(self, until: float) -> bool:
        """Sleep until a monotonic time; False when stopping."""
        while (delay := until - time.monotonic()) > 0:
            if self.stopping.wait(min(delay, 1.0)):
                return False
        return True

    def _wait_until_open(self) -> bool:
        """Wait out a platform's retry_after or a backoff; False when stopping."""
        return self._wait(self.blocked_until)

    def _reserve(self) -> bool:
        """Hold a send slot of this destination (and of its bot); False when stopping."""
        while True:
            if not self._wait_until_open():
                return False
            delay = self.dest.limiter.try_reserve()
            if delay <= 0:
                if self.dest.shared is None:
                    return True
                delay = self.dest.shared.try_reserve()
                if delay <= 0:
                    return True
                self.dest.limiter.release()
            if self.stopping.wait(min(delay, 1.0)):
                return False

    def _complete(self) -> None:
        self.dest.limiter.complete()
        if self.dest.shared is not None:
            self.dest.shared.complete()

    def _deliver(self, batch: list[_Item]) -> None:
        dest, channel = self.dest, self.dest.channel
        payloads = dest.payloads([i.alert for i in batch])
        backoff = Backoff(cap_s=min(30.0, self.config.settings.max_retry_s))
        failing_since: float | None = None
        tried_fallback = False
        index = 0
        while index < len(payloads):
            if not self._reserve():
                return  # stopping: nothing recorded, the offsets stay, a restart sends it
            start = time.monotonic()
            result = dest.post(self.client, payloads[index])
            self._complete()
            detail = SECRETS.redact(result.detail)
            metrics.NOTIFY_REQUESTS.labels(channel, result.outcome).inc()
            metrics.NOTIFY_REQUEST_SECONDS.labels(channel).observe(time.monotonic() - start)
            if result.outcome == channels.OK:
                index += 1
                backoff.reset()
                failing_since = None
                tried_fallback = False
                self._set_state("ok", "%s: delivering again", dest.key)
                continue
            if result.outcome == channels.RATE_LIMITED:
                wait = result.retry_after_s
                if wait is None:  # not said: one full window of its limits
                    wait = max((r.window_s for r in dest.limiter.rates), default=1.0)
                self.blocked_until = time.monotonic() + wait
                self._set_state(
                    "rate_limited",
                    "%s: rate limited (%s), no sends for %.1f s",
                    dest.key,
                    detail,
                    wait,
                )
                continue
            if result.outcome == channels.RETRY:
                now = time.monotonic()
                failing_since = now if failing_since is None else failing_since
                if now - failing_since >= self.config.settings.max_retry_s:
                    self._finish(batch, DEAD_LETTERED, "unavailable", detail)
                    return
                wait = backoff.next()
                self.blocked_until = now + wait
                self._set_state(
                    "retrying",
                    "%s: %s; retrying with backoff (next in %.1f s)",
                    dest.key,
                    detail,
                    wait,
                )
                continue
            fallback = None if tried_fallback else dest.fallback(payloads[index], result)
            if fallback is not None:
                log.warning("%s: %s; %s", dest.key, detail, fallback.note or "trying once more")
                tried_fallback = True
                payloads[index] = fallback
                continue
            self._finish(batch, DEAD_LETTERED, result.reason or "rejected", detail)
            return
        self._finish(batch, DELIVERED)

    def _finish(self, batch: list[_Item], outcome: str, reason: str = "", detail: str = "") -> None:
        if outcome == DEAD_LETTERED:
            log.error(
                "%s: %d alert(s) dead-lettered (%s: %s)", self.dest.key, len(batch), reason, detail
            )
        self._done(_Done(self.dest, batch, outcome, reason, detail))

    def _set_state(self, state: str, message: str, *args: Any) -> None:
        if state != self._state:
            self._state = state
            (log.info if state == "ok" else log.warning)(message, *args)


class Notifier:
    """``run(stop)`` until ``stop`` is set; every outcome is recorded before its offset is
    committed. One instance per consumer group is the intended deployment (see docs/alerts.md)."""

    def __init__(
        self,
        settings: Settings,
        config: NotifyConfig,
        client: httpx.Client | None = None,
    ) -> None:
        if not config.destinations:
            raise ValueError("no destinations")
        self.settings = settings
        self.config = config
        self.topic = settings.topic(ALERTS)
        self.deadletter_topic = settings.topic(DEADLETTER)
        self.client = client or httpx.Client(
            timeout=httpx.Timeout(
                config.settings.timeout_s, connect=min(5.0, config.settings.timeout_s)
            ),
            follow_redirects=False,
        )
        self._own_client = client is None
        self.store = DeliveredStore(config.state_file, config.settings.keep_days)
        self.producer = TrackedProducer(settings.connection)
        self._completions: collections.deque[_Done] = collections.deque()
        self._wake = threading.Event()
        self.workers = {
            d.key: _Worker(d, self.client, config, self._on_done) for d in config.destinations
        }
        #: The producer of user_events, when a gateway user is among the destinations: their
        #: alert events and the delivery outcomes of their alerts.
        self.user_events: UserEvents | None = None
        gateways = [d for d in config.destinations if isinstance(d, GatewayUser)]
        if gateways:
            self.user_events = UserEvents(
                settings.connection, settings.topic(USER_EVENTS), config.settings.timeout_s
            )
            for dest in gateways:
                dest.events = self.user_events
        #: partition -> {offset: destinations still to finish}, in offset order.
        self._pending: dict[int, dict[int, int]] = {}
        self._next: dict[int, int] = {}
        self._committed: dict[int, int] = {}
        #: (alert id, destination key) being delivered -> every (partition, offset) waiting on it.
        self._in_flight: dict[tuple[str, str], list[tuple[int, int]]] = {}
        self._paused = False
        self.consumer: Consumer | None = None
        self.stats: collections.Counter[str] = collections.Counter()
        self.thread: threading.Thread | None = None

    # ------------------------------------------------------------------ worker → main

    def _on_done(self, done: _Done) -> None:
        self._completions.append(done)
        self._wake.set()

    # ------------------------------------------------------------------ main loop

    def start(self, stop: threading.Event) -> threading.Thread:
        """``run(stop)`` in a thread (``self.thread``), for processes that do other things too."""
        self.thread = threading.Thread(target=self.run, args=(stop,), name="notify", daemon=True)
        self.thread.start()
        return self.thread

    def run(self, stop: threading.Event) -> None:
        conf = consumer_config(self.settings.connection, self.config.settings.group_id)
        conf["auto.offset.reset"] = self.config.settings.start
        self.consumer = Consumer(conf)
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        for worker in self.workers.values():
            worker.start()
        log.info(
            "notifying from %s (group %s) to: %s",
            self.topic,
            self.config.settings.group_id,
            "; ".join(self.config.describe()),
        )
        last_commit = 0.0
        try:
            while not stop.is_set():
                messages = self.consumer.consume(500, timeout=0.1)
                self._handle(messages)
                self._drain()
                if self.user_events is not None:
                    self.user_events.poll()
                self._supervise()
                self._flow_control()
                if time.monotonic() - last_commit >= 0.5:
                    self._commit(asynchronous=True)
                    last_commit = time.monotonic()
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        for worker in self.workers.values():
            worker.stop()
        for worker in self.workers.values():
            worker.join(self.config.settings.timeout_s + 5)
        self._drain()
        try:
            if self.consumer is not None:
                self._commit(asynchronous=False)
                self.consumer.close()
        finally:
            try:
                self.producer.flush()
            finally:
                if self.user_events is not None:
                    self.user_events.close()
                self.store.close()
                if self._own_client:
                    self.client.close()

    def _supervise(self) -> None:
        """A destination worker whose thread ended (it is never asked to before shutdown) is
        replaced, with its queue: no destination stops quietly."""
        for key, worker in list(self.workers.items()):
            if not worker.is_alive() and not worker.stopping.is_set():
                metrics.NOTIFY_WORKER_ERRORS.labels(worker.dest.channel).inc()
                log.error("%s: its worker thread ended unexpectedly; restarting it", key)
                self.workers[key] = worker.restarted()
                self.workers[key].start()

    def _handle(self, messages: list[Message]) -> None:
        letters: list[tuple[int, int]] = []
        seen: set[int] = set()
        for msg in messages:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("alerts consumer: %s", err)
                continue
            partition, offset = msg.partition(), msg.offset()
            if partition is None or offset is None or partition not in self._pending:
                continue
            self._next[partition] = offset + 1
            seen.add(partition)
            raw = msg.value() or b""
            metrics.NOTIFY_CONSUMED.inc()
            try:
                alert = Alert.decode(raw)  # total: every field checked, ParseError otherwise
            except ParseError as exc:
                letters.append((partition, offset))
                self._dead_letter_raw(raw, exc.reason, exc.detail, partition, offset)
                continue
            self._dispatch(_Item(alert, raw, partition, offset, time.monotonic()))
        if letters:
            self.producer.flush()  # confirmed before the offsets may move past them
        assert self.consumer is not None
        for partition in seen:
            tp = TopicPartition(self.topic, partition)
            _low, high = self.consumer.get_watermark_offsets(tp, cached=True)
            if high >= 0:
                lag = max(0, high - self._next[partition])
                metrics.CONSUMER_LAG.labels("notify", str(partition)).set(lag)

    def _dispatch(self, item: _Item) -> None:
        targets = self.config.route(item.alert)
        item.users = tuple(dict.fromkeys(d.user for d in targets if isinstance(d, GatewayUser)))
        waiting = 0
        for dest in targets:
            key = (item.alert.id, dest.key)
            if key in self._in_flight:  # the same alert again (an at-least-once upstream)
                self._in_flight[key].append((item.partition, item.offset))
                waiting += 1
            elif (earlier := self.store.outcome(item.alert.id, dest.key)) is not None:
                metrics.NOTIFY_ALERTS.labels(dest.channel, "duplicate").inc()
                self.stats["duplicate"] += 1
                self._publish_outcome(item, dest, "duplicate", earlier)
            else:
                self._in_flight[key] = [(item.partition, item.offset)]
                self.workers[dest.key].put(item)
                waiting += 1
        if not targets:
            metrics.NOTIFY_ALERTS.labels("-", "unrouted").inc()
            self.stats["unrouted"] += 1
        if waiting:
            self._pending[item.partition][item.offset] = waiting

    def _drain(self) -> None:
        """Record outcomes (store, dead letters), then let the offsets move."""
        if not self._completions:
            return
        batch: list[_Done] = []
        while self._completions:
            batch.append(self._completions.popleft())
        if any(d.outcome == DEAD_LETTERED for d in batch):
            for done in batch:
                if done.outcome == DEAD_LETTERED:
                    for item in done.items:
                        self._dead_letter_alert(item, done)
            self.producer.flush()
        wall_done = time.time()
        for done in batch:
            dest = done.dest
            self.store.mark((i.alert.id for i in done.items), dest.key, done.outcome)
            outcome = done.outcome
            if outcome == DELIVERED and len(done.items) > 1:
                outcome = "digested"
                metrics.NOTIFY_DIGESTS.labels(dest.channel).inc()
            metrics.NOTIFY_ALERTS.labels(dest.channel, outcome).inc(len(done.items))
            self.stats[outcome] += len(done.items)
            reason = done.reason if done.outcome == DEAD_LETTERED else ""
            for item in done.items:
                self._publish_outcome(item, dest, outcome, reason)
                if done.outcome == DELIVERED:
                    metrics.NOTIFY_LATENCY.labels(dest.channel).observe(
                        done.finished - item.received
                    )
                    end_to_end = wall_done - item.alert.ts_ms / 1000
                    metrics.NOTIFY_END_TO_END.labels(dest.channel).observe(max(0.0, end_to_end))
                for partition, offset in self._in_flight.pop((item.alert.id, dest.key), []):
                    self._resolve(partition, offset)

    def _publish_outcome(self, item: _Item, dest: Destination, outcome: str, reason: str) -> None:
        """The outcome of ``item`` on ``dest`` to each gateway user of the alert: handed to the
        producer without waiting, never raising (:meth:`UserEvents.publish`)."""
        if not item.users or self.user_events is None:
            return
        now = int(time.time() * 1000)
        channel, label = dest.key[:MAX_CHANNEL] or "-", _label(reason)
        for user in item.users:
            event = UserEvent.of_delivery(user, item.alert.id, channel, outcome, label, now)
            self.user_events.publish(event)

    def _resolve(self, partition: int, offset: int) -> None:
        pending = self._pending.get(partition)
        if pending is None or offset not in pending:
            return  # revoked meanwhile
        pending[offset] -= 1
        if pending[offset] <= 0:
            del pending[offset]

    def _dead_letter_raw(
        self, raw: bytes, reason: str, detail: str, partition: int, offset: int
    ) -> None:
        metrics.NOTIFY_DEAD_LETTERED.labels("-", reason).inc()
        source = {"topic": self.topic, "partition": partition, "offset": offset}
        letter = DeadLetter(reason, f"alerts consumer: {detail}", raw, source)
        self.producer.send(self.deadletter_topic, letter.encode())

    def _dead_letter_alert(self, item: _Item, done: _Done) -> None:
        reason = _DEAD_REASONS.get(done.reason, "notify_rejected")
        metrics.NOTIFY_DEAD_LETTERED.labels(done.dest.channel, done.reason).inc()
        source = {
            "topic": self.topic,
            "partition": item.partition,
            "offset": item.offset,
            "destination": done.dest.key,
        }
        detail = f"{done.dest.kind} {done.dest.key}: {done.reason}: {done.detail}"
        self.producer.send(
            self.deadletter_topic, DeadLetter(reason, detail, item.raw, source).encode()
        )

    # ------------------------------------------------------------------ offsets

    def committable(self) -> dict[int, int]:
        """Per partition: the first offset not finished on every destination."""
        out = {}
        for partition, pending in self._pending.items():
            if pending:
                out[partition] = next(iter(pending))
            elif partition in self._next:
                out[partition] = self._next[partition]
        return out

    def _commit(self, asynchronous: bool) -> None:
        assert self.consumer is not None
        offsets = [
            TopicPartition(self.topic, p, o)
            for p, o in self.committable().items()
            if self._committed.get(p) != o
        ]
        if not offsets:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            else:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        except Exception as exc:  # a commit can fail during a rebalance; the next one retries
            log.warning("committing notifier offsets failed, will retry: %s", exc)
            return
        for tp in offsets:
            self._committed[tp.partition] = tp.offset

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._pending.setdefault(tp.partition, {})
        log.info("alerts partitions assigned: %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit(asynchronous=False)
        for tp in partitions:
            self._pending.pop(tp.partition, None)
            self._next.pop(tp.partition, None)
            self._committed.pop(tp.partition, None)
        log.info("alerts partitions revoked: %s", sorted(tp.partition for tp in partitions))

    def _flow_control(self) -> None:
        """Pause consumption while too many alerts are held (a destination is down)."""
        assert self.consumer is not None
        held = sum(len(p) for p in self._pending.values())
        if not self._paused and held >= self.config.settings.max_pending:
            self.consumer.pause(self.consumer.assignment())
            self._paused = True
            log.warning("%d alerts pending delivery: pausing the alerts consumer", held)
        elif self._paused and held <= self.config.settings.max_pending // 2:
            self.consumer.resume(self.consumer.assignment())
            self._paused = False
            log.info("pending alerts down to %d: consuming again", held)

    def pending(self) -> int:
        return sum(len(p) for p in self._pending.values())

    def caught_up(self, ends: dict[int, int]) -> bool:
        """Every alert before ``ends`` (partition -> end offset) read and finished. Safe to call
        from another thread (a dict resized meanwhile just means "not yet")."""
        try:
            return (
                all(self._next.get(p, 0) >= end for p, end in ends.items()) and not self.pending()
            )
        except RuntimeError:
            return False
