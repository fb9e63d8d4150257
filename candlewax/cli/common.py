"""What several commands share: their settings, the broker check, signals, publishing."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from candlewax import metrics
from candlewax.broker import wait_for_broker
from candlewax.cli.parser import flag_settings
from candlewax.codec import DeadLetter, Trade
from candlewax.errors import ConfigError
from candlewax.settings import Settings
from candlewax.topics import DEADLETTER, TRADES

if TYPE_CHECKING:
    from connectors.publish import TradeBatch

log = logging.getLogger("candlewax")

#: What the publisher takes: items ``(recv_ms, trades, rejected)`` one by one, or batches of
#: them column-wise (``connectors.publish.TradeBatch``, what replays read).
Items = Iterator["tuple[int, list[Trade], list[DeadLetter]] | TradeBatch"]


def settings_from(args: argparse.Namespace, defaults: Mapping[str, Any] | None = None) -> Settings:
    """``defaults`` < ``--config`` file (else ``CANDLEWAX_CONFIG``) < environment < flags."""
    path = getattr(args, "config", None) or os.environ.get("CANDLEWAX_CONFIG") or None
    return Settings.load(path, defaults=defaults, **flag_settings(args))


def require_broker(settings: Settings) -> Settings:
    """The settings, once Kafka answers with them (the same properties as every client)."""
    if not settings.bootstrap_servers:
        raise ConfigError(
            "no Kafka to talk to: pass --bootstrap-servers HOST:PORT or set "
            "CANDLEWAX_BOOTSTRAP_SERVERS (start a local one with `candlewax broker`)"
        )
    wait_for_broker(settings.connection)
    return settings


def stop_on_signals() -> threading.Event:
    """An event set by the first SIGINT/SIGTERM; a second Ctrl-C leaves at once."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def serve_metrics(settings: Settings, requested: bool) -> None:
    if requested:
        port = metrics.serve(settings.metrics_host, settings.metrics_port)
        print(f"metrics: http://{settings.metrics_host}:{port}/metrics", flush=True)


def replay_items(path: str, venue: str | None, fmt: str | None) -> Items:
    """The items of a replay file, in batches decoded column-wise (the canonical trades of an
    NDJSON file are published as they are); a missing file or unknown format fails here, at
    once."""
    from connectors.replay import iter_batches

    return iter_batches(path, venue=venue, fmt=fmt)


def synthetic_items(
    symbols: int, seed: int, rate: float, start_ms: int, duration_s: float | None, paced: bool
) -> Items:
    from connectors.synthetic import SyntheticMarket

    market = SyntheticMarket(symbols, seed=seed, start_ms=start_ms, trades_per_second=rate)
    end = None if duration_s is None else start_ms + int(duration_s * 1000)
    if not paced and end is not None:
        for batch in market.batches(until_ms=end):
            yield batch[-1].ts_ms, batch, []
        return
    step_ms = 100  # paced: hand trades out in 100 ms slices of event time
    t = start_ms
    while end is None or t < end:
        t += step_ms
        for batch in market.batches(until_ms=t if end is None else min(t, end)):
            yield t, batch, []


def publish(
    settings: Settings,
    items: Items,
    speed: float,
    shift_ms: int,
    per_message: int,
    stop: threading.Event,
    stats: Any = None,
) -> Any:
    """Publish ``items`` to the trades topic; returns the PublishStats once all are confirmed."""
    from connectors.producer import TradeProducer
    from connectors.publish import PublishStats
    from connectors.publish import publish as run

    stats = stats if stats is not None else PublishStats()
    producer = TradeProducer(
        settings.connection, settings.topic(TRADES), settings.topic(DEADLETTER)
    )
    try:
        run(items, producer, speed=speed, shift_ms=shift_ms, per_message=per_message, stop=stop, stats=stats)  # fmt: skip
    finally:
        close = getattr(items, "close", None)
        if close is not None:  # a stopped replay: its reader thread stops and closes the file
            close()
        producer.flush()
    return stats


def notify_config(settings: Settings, console: bool = False) -> Any:
    """The notifier's destinations for ``settings`` (plus a console channel on request)."""
    from candlewax.settings.notify import ConsoleChannel
    from sinks.notify.config import NotifyConfig, channels_from_env

    if console:
        channels = dict(settings.notify.channels or channels_from_env(os.environ))
        channels["console"] = ConsoleChannel(type="console")
        settings = settings.replace(
            notify=settings.notify.model_copy(update={"channels": channels})
        )
    return NotifyConfig.build(settings, os.environ)
