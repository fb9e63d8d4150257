"""Clients, their subscriptions and their queues: the gateway's fan-out.

Every message is rendered once per stream event and shared by every subscriber (a combined
stream's ``{"stream", "data"}`` wrapper once per distinct spelling of the stream's name). Each
client has its own bounded queue and one writer task, so a slow client never slows the others:

- kline and ticker values carry a key (the stream and the bar's window): a newer value replaces
  the client's unsent older one in place, so these never pile up — a slow client simply gets
  the newest bar;
- trade, alert and user messages are never dropped silently: a client with more than
  ``queue_size`` of them unsent is disconnected (close code 1008, reason ``slow client``) and
  counted.

Runs on one asyncio loop; not thread-safe (the Kafka feed hands its batches over with
``call_soon_threadsafe``).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Final

from candlewax import metrics
from sinks.gateway.streams import CONFLATED, Stream
from sinks.gateway.wire import wrapped

#: Close codes (RFC 6455): 1008 policy violation (slow, over the message rate), 1013 try again
#: later (the gateway is full).
SLOW_CLIENT: Final = (1008, "slow client: too many messages unsent")
RATE_LIMIT: Final = (1008, "too many messages: more than the allowed per second")
FULL: Final = (1013, "too many connections")
_ids = itertools.count(1)


#: Trades one merged message holds at most.
MERGE_MAX: Final = 500


@dataclass(slots=True)
class Entry:
    """One queued message. A keyed entry (kline, ticker) is updated in place by newer values; a
    trade entry still unsent takes the stream's next trades too (``parts``: their events)."""

    text: str
    kind: str
    source_ms: int
    key: tuple[Any, ...] | None = None
    parts: list[str] | None = None
    name: str = ""
    combined: bool = False
    channel: str = ""

    def render(self) -> str:
        if self.parts is None or len(self.parts) == 1:
            return self.text  # rendered once for every subscriber of the same spelling
        data = "[" + ",".join(self.parts) + "]"
        return wrapped(self.name, data.encode()).decode() if self.combined else data


@dataclass(eq=False)
class Client:
    """One WebSocket connection's state: its streams, its queue, and a wake-up for its writer."""

    combined: bool
    queue_size: int
    id: int = field(default_factory=lambda: next(_ids))
    #: channel → the name as the client spelled it
    streams: dict[str, str] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    queue: deque[Entry] = field(default_factory=deque)
    keyed: dict[tuple[Any, ...], Entry] = field(default_factory=dict)
    #: channel → its trade entry still unsent (the next trades join it)
    merging: dict[str, Entry] = field(default_factory=dict)
    plain: int = 0
    closing: tuple[int, str] | None = None
    user: str | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    #: set once the client is to be closed (its writer may be stuck in a send)
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def put(self, text: str, kind: str, source_ms: int, key: tuple[Any, ...] | None) -> None:
        if self.closing is not None:
            return
        if key is not None:
            entry = self.keyed.get(key)
            if entry is not None:
                entry.text, entry.source_ms = text, source_ms
                metrics.GATEWAY_REPLACED.labels(kind).inc()
                return
            entry = self.keyed[key] = Entry(text, kind, source_ms, key)
        else:
            if self.plain >= self.queue_size:
                self.close(*SLOW_CLIENT, reason="slow_client")
                return
            self.plain += 1
            entry = Entry(text, kind, source_ms)
        self.queue.append(entry)
        self.wake.set()

    def put_trade(self, channel: str, name: str, event: str, text: str, source_ms: int) -> None:
        """A trade event: its own message when the client keeps up; appended to the stream's
        unsent message when it does not (then ``data`` is an array of events, in order)."""
        if self.closing is not None:
            return
        entry = self.merging.get(channel)
        if entry is not None and entry.parts is not None and len(entry.parts) < MERGE_MAX:
            entry.parts.append(event)
            return
        if self.plain >= self.queue_size:
            self.close(*SLOW_CLIENT, reason="slow_client")
            return
        self.plain += 1
        entry = Entry(
            text,
            "trade",
            source_ms,
            parts=[event],
            name=name,
            combined=self.combined,
            channel=channel,
        )
        self.merging[channel] = entry
        self.queue.append(entry)
        self.wake.set()

    def pop(self) -> Entry:
        entry = self.queue.popleft()
        if entry.key is not None:
            del self.keyed[entry.key]
        else:
            self.plain -= 1
            if entry.parts is not None and self.merging.get(entry.channel) is entry:
                del self.merging[entry.channel]
        return entry

    def close(self, code: int, text: str, reason: str) -> None:
        """Ask the writer to close the socket with ``code``/``text`` (``reason``: the metric's)."""
        if self.closing is None:
            self.closing = (code, text)
            metrics.GATEWAY_DISCONNECTS.labels(reason).inc()
            self.queue.clear()
            self.keyed.clear()
            self.merging.clear()
            self.plain = 0
            self.wake.set()
            self.closed.set()


class Hub:
    """Who listens to what, and the fan-out of one rendered message to them."""

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self.clients: set[Client] = set()
        self.subscribers: dict[str, dict[Client, str]] = {}

    # ------------------------------------------------------------------ clients

    def join(self, client: Client) -> bool:
        if len(self.clients) >= self.max_connections:
            metrics.GATEWAY_DISCONNECTS.labels("too_many_connections").inc()
            return False
        self.clients.add(client)
        metrics.GATEWAY_CONNECTIONS.set(len(self.clients))
        return True

    def leave(self, client: Client) -> None:
        for channel in list(client.streams):
            self._drop(client, channel)
        self.clients.discard(client)
        metrics.GATEWAY_CONNECTIONS.set(len(self.clients))

    def subscribe(self, client: Client, stream: Stream, name: str) -> None:
        channel = stream.channel
        if channel in client.streams:
            client.streams[channel] = name
            self.subscribers[channel][client] = name
            return
        client.streams[channel] = name
        client.kinds[channel] = stream.kind
        self.subscribers.setdefault(channel, {})[client] = name
        metrics.GATEWAY_SUBSCRIPTIONS.labels(stream.kind).inc()

    def unsubscribe(self, client: Client, stream: Stream) -> None:
        if stream.channel in client.streams:
            self._drop(client, stream.channel)

    def _drop(self, client: Client, channel: str) -> None:
        del client.streams[channel]
        kind = client.kinds.pop(channel)
        metrics.GATEWAY_SUBSCRIPTIONS.labels(kind).dec()
        listeners = self.subscribers.get(channel)
        if listeners is not None:
            listeners.pop(client, None)
            if not listeners:
                del self.subscribers[channel]

    def listened(self, channel: str) -> bool:
        return channel in self.subscribers

    # ------------------------------------------------------------------ fan-out

    def publish(
        self,
        channel: str,
        kind: str,
        data: bytes,
        source_ms: int,
        window: int | None = None,
    ) -> int:
        """``data`` (one rendered JSON object) to every subscriber of ``channel``; kline and
        ticker values (``window``: the bar's start) replace the unsent one of the same window.
        Returns how many clients got it."""
        listeners = self.subscribers.get(channel)
        if not listeners:
            return 0
        raw: str | None = None
        texts: dict[str, str] = {}
        key = (channel, window) if kind in CONFLATED else None
        if kind == "trade":
            event = data.decode()
            for client, name in listeners.items():
                text = event
                if client.combined:
                    if name not in texts:
                        texts[name] = _wrap(name, data)
                    text = texts[name]
                client.put_trade(channel, name, event, text, source_ms)
            return len(listeners)
        for client, name in listeners.items():
            if client.combined:
                if name not in texts:
                    texts[name] = _wrap(name, data)
                client.put(texts[name], kind, source_ms, key)
            else:
                if raw is None:
                    raw = data.decode()
                client.put(raw, kind, source_ms, key)
        return len(listeners)

    def send_one(self, client: Client, stream: Stream, name: str, data: bytes, window: int) -> None:
        """A value to one client only (a new subscriber's snapshot)."""
        text = _wrap(name, data) if client.combined else data.decode()
        key = (stream.channel, window) if stream.kind in CONFLATED else None
        client.put(text, stream.kind, 0, key)

    def send_user(self, user: str, data: bytes, source_ms: int) -> int:
        """A private message to every connection logged in as ``user`` with the stream on."""
        sent = 0
        for client, name in self.subscribers.get("user", {}).items():
            if client.user == user:
                client.put(_wrap(name, data) if client.combined else data.decode(), "user", source_ms, None)  # fmt: skip
                sent += 1
        return sent


def _wrap(name: str, data: bytes) -> str:
    return wrapped(name, data).decode()


_SERIES: dict[str, tuple[Any, Any]] = {}


def _series(kind: str) -> tuple[Any, Any]:
    """The messages counter and push histogram of a kind (looked up once: per message, the
    labels() call would cost more than the send's bookkeeping)."""
    got = _SERIES.get(kind)
    if got is None:
        got = _SERIES[kind] = (metrics.GATEWAY_MESSAGES.labels(kind), metrics.GATEWAY_PUSH_SECONDS.labels(kind))  # fmt: skip
    return got


async def write_loop(client: Client, send: Any, close: Any, send_timeout_s: float) -> None:
    """The client's writer: sends its queue in order until it is closed (``send(text)`` and
    ``close(code, reason)`` are the socket's coroutines). A send the client's socket does not
    take within ``send_timeout_s`` (it stopped reading; the server's buffers are full) closes it
    as a slow client."""
    while True:
        await client.wake.wait()
        client.wake.clear()
        while client.queue and client.closing is None:
            entry = client.pop()
            try:
                async with asyncio.timeout(send_timeout_s):  # no task per send (wait_for makes one)
                    await send(entry.render())
            except TimeoutError:
                client.close(*SLOW_CLIENT, reason="slow_client")
                return
            counter, latency = _series(entry.kind)
            counter.inc()
            if entry.source_ms:
                latency.observe(max(0.0, time.time() - entry.source_ms / 1000))
        if client.closing is not None:
            await close(*client.closing)
            return
