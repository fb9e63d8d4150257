"""The one-shot and long-running commands other than ``flow`` and ``demo``."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import Any

import orjson

from candlewax.broker import BrokerTls, EmbeddedBroker
from candlewax.cli.common import (
    notify_config,
    publish,
    replay_items,
    require_broker,
    serve_metrics,
    settings_from,
    stop_on_signals,
    synthetic_items,
)
from candlewax.cli.parser import flag
from candlewax.errors import BrokerError, CandlewaxError, ConfigError
from candlewax.settings import Settings, env_secret
from candlewax.storage import data_path
from candlewax.topics import ALERTS, BARS, DEADLETTER, TRADES, ensure_topics


def _metrics_requested(args: argparse.Namespace) -> bool:
    return flag(args, "metrics_port") is not None


def cmd_broker(args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    tls = None
    if args.cert or args.key or args.client_ca:
        if not (args.cert and args.key):
            raise ConfigError("--cert and --key go together: the certificate and its private key")
        tls = BrokerTls(args.cert, args.key, args.client_ca)
    broker = EmbeddedBroker(args.engine, args.port, tls=tls)
    broker.start()
    print(f"{args.engine} broker listening on {broker.bootstrap_servers}", flush=True)
    print(f"export CANDLEWAX_BOOTSTRAP_SERVERS={broker.bootstrap_servers}", flush=True)
    try:
        while not stop.wait(0.5):
            if not broker.running():
                raise BrokerError(f"the {args.engine} broker exited: {broker.log_tail()}")
    finally:
        broker.stop()
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    settings = require_broker(settings_from(args))
    for topic, status in ensure_topics(settings).items():
        print(f"{topic}: {status}")
    return 0


def _publisher(args: argparse.Namespace) -> tuple[Settings, threading.Event]:
    """A publishing command's start: settings, broker reached, topics there, metrics, signals."""
    settings = require_broker(settings_from(args))
    ensure_topics(settings)
    serve_metrics(settings, _metrics_requested(args))
    return settings, stop_on_signals()


def cmd_replay(args: argparse.Namespace) -> int:
    from connectors.publish import PublishStats
    from connectors.replay import ReplayError

    settings, stop = _publisher(args)
    stats = PublishStats()
    items = replay_items(args.path, args.venue, args.format)
    try:
        publish(settings, items, args.speed, args.shift_ms, args.per_message, stop, stats)
    except ReplayError as exc:
        raise CandlewaxError(
            f"replay stopped: {exc}; {stats.trades} trades ({stats.rejected} rejected) were "
            f"published to {settings.topic(TRADES)} before it — fix or re-download the file "
            "and replay it again (the flow drops the trades it has already counted)"
        ) from None
    print(
        f"published {stats.trades} trades ({stats.rejected} rejected → "
        f"{settings.topic(DEADLETTER)}, {stats.heartbeats} heartbeats) to {settings.topic(TRADES)}"
    )
    return 0


def cmd_synthetic(args: argparse.Namespace) -> int:
    settings, stop = _publisher(args)
    start_ms = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    items = synthetic_items(
        args.symbols, args.seed, args.rate, start_ms, args.duration, paced=args.speed > 0
    )
    stats = publish(settings, items, args.speed, 0, args.per_message, stop)
    print(f"published {stats.trades} synthetic trades to {settings.topic(TRADES)}")
    return 0


def _live_start(args: argparse.Namespace, rest: bool) -> tuple[Any, Settings, list[str], Any]:
    """A live command's start (``connect``; ``record``, which has no REST): venue, settings,
    symbols, connection options."""
    from connectors.live import LiveOptions
    from connectors.venues import venue_spec

    spec = venue_spec(args.venue)
    settings = settings_from(args)
    symbols = list(settings.symbols)
    if not symbols:
        raise ConfigError("no symbols: pass --symbols BTCUSDT,ETHUSDT or set symbols in the config")
    options = LiveOptions(
        ws_url=args.ws_url,
        rest_url=args.rest_url if rest else None,
        token=env_secret(os.environ, spec.venue.token_env) if spec.venue.token_env else None,
        api_key=env_secret(os.environ, "BINANCE_API_KEY")
        if rest and spec.name.startswith("binance")
        else None,
    )
    if args.stale_after is not None:
        options.stale_after_s = args.stale_after
    if args.ping_interval is not None:
        options.ping_interval_s = args.ping_interval
    return spec, settings, symbols, options


def cmd_connect(args: argparse.Namespace) -> int:
    from connectors.live import LiveConnector
    from connectors.producer import TradeProducer

    spec, settings, symbols, options = _live_start(args, rest=True)
    options.fill = not args.no_fill
    options.fill_intervals = tuple(settings.intervals)
    options.fill_calendar = settings.calendar
    if args.fill_max_requests is not None:
        if args.fill_max_requests < 1:
            raise ConfigError(
                f"--fill-max-requests {args.fill_max_requests}: the start-up fill needs at "
                "least 1 request per symbol (or pass --no-fill)"
            )
        options.fill_max_requests = args.fill_max_requests
    settings = require_broker(settings)
    ensure_topics(settings)
    serve_metrics(settings, _metrics_requested(args))
    stop = stop_on_signals()
    producer = TradeProducer(
        settings.connection, settings.topic(TRADES), settings.topic(DEADLETTER)
    )
    connector = LiveConnector(spec, symbols, producer, options, stop)
    stats = connector.run(exit_after_s=args.exit_after)
    print(
        f"{spec.name}: {stats.trades} trades published ({stats.backfilled} backfilled, "
        f"{stats.filled} filled at start-up, "
        f"{stats.duplicates} duplicates dropped, {stats.unrecovered} gaps unrecovered, "
        f"{stats.rejected} frames rejected, {stats.rest_rejected} REST rows rejected, "
        f"{stats.implausible} implausible ids, "
        f"{stats.crashes} connection crashes), reconnects {dict(sorted(stats.reconnects.items()))}"
    )
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    """The venue's raw frames into ``--out`` (connectors/record.py); no broker needed."""
    from connectors.live import LiveConnector
    from connectors.record import FrameWriter, check_directory

    spec, _, symbols, options = _live_start(args, rest=False)
    stop = stop_on_signals()
    writer = FrameWriter(args.out, spec.name)  # opens nothing until the first frame
    # Unknown symbols and a missing token fail here, then an unusable directory: before connecting.
    connector = LiveConnector(spec, symbols, None, options, stop, recorder=writer)
    check_directory(args.out)
    try:
        stats = connector.run(exit_after_s=args.exit_after)
    finally:
        writer.close()
    written = writer.stats
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(written.skipped.items())) or "none"
    print(
        f"{spec.name}: {written.frames} frames recorded ({written.retabbed} with line breaks "
        f"written as tabs; skipped: {skipped}) into {len(written.files)} file(s) in {args.out}, "
        f"reconnects {dict(sorted(stats.reconnects.items()))}"
    )
    for path in written.files:
        print(path)
    return 0


def cmd_backtest(args: argparse.Namespace) -> int:
    from flows.backtest import parse_time, run_backtest
    from sinks.parquet import check_writable
    from sinks.report import write_report

    settings = settings_from(args)  # bad rules fail here, before any reading
    between = (parse_time(args.from_time), parse_time(args.to_time))
    if between[0] >= between[1]:
        raise ConfigError(f"--from {args.from_time} is not before --to {args.to_time}")
    try:
        out = data_path(args.out)
        archive = data_path(args.from_archive) if args.from_archive else None
    except ValueError as exc:
        raise ConfigError(f"--out / --from-archive: {exc}") from None
    check_writable(out)
    symbols = (
        frozenset(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        if args.symbols
        else None
    )
    if archive is None:
        settings = require_broker(settings)
    summary = run_backtest(settings, between, out, symbols, archive)
    report = write_report(out, summary, _read_jsonl(out / "alerts.jsonl"))
    print(
        f"backtest: {summary['bars']} bars, {summary['alerts']} alerts "
        f"{summary['alerts_by_rule']}, {summary['deadletters']} dead letters in "
        f"{summary['seconds']} s"
    )
    print(f"bars: {out / 'bars'}  alerts: {out / 'alerts.jsonl'}  report: {report}")
    return 0


def _read_jsonl(path: Any) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def cmd_recovery_init(args: argparse.Namespace) -> int:
    """Create the Bytewax recovery store (idempotent: an existing one is left as it is)."""
    from flows.recovery import init_store

    count, only = args.partitions or 1, args.only
    if args.per_process:  # as many partitions as processes; this process keeps its own
        if args.partitions is not None or args.only is not None:
            raise ConfigError("--per-process sets --partitions and --only: pass none of them")
        process_id, addresses = settings_from(args).cluster.resolve(os.environ)
        count, only = max(1, len(addresses)), process_id
    print(init_store(args.directory, count, only))
    return 0


def _tail(args: argparse.Namespace, topic_name: str) -> int:
    """Print a topic as JSON lines from the beginning until Ctrl-C (``--interval`` filters)."""
    from candlewax.codec import Alert, Bar, ParseError
    from sinks.console import follow

    settings = require_broker(settings_from(args))
    stop = stop_on_signals()
    wanted = set(args.interval or [])
    decode = Bar.decode if topic_name == BARS else Alert.decode
    skipped = 0

    def on_value(topic: str, value: bytes) -> None:
        nonlocal skipped
        try:
            record = decode(value)
        except ParseError as exc:  # counted; said once per 1,000, never a traceback
            skipped += 1
            if skipped % 1000 == 1:
                print(f"candlewax: skipped {skipped} unreadable message(s) of {topic} "
                      f"({exc.reason}: {exc.detail[:80]})", file=sys.stderr, flush=True)  # fmt: skip
            return
        if not wanted or record.interval in wanted:
            sys.stdout.write(record.encode().decode() + "\n")
            sys.stdout.flush()

    follow(settings.connection, [settings.topic(topic_name)], on_value, stop)
    return 0


def cmd_bars_tail(args: argparse.Namespace) -> int:
    return _tail(args, BARS)


def cmd_alerts_tail(args: argparse.Namespace) -> int:
    return _tail(args, ALERTS)


def cmd_notify(args: argparse.Namespace) -> int:
    from sinks.notify.notifier import Notifier

    settings = settings_from(args)
    config = notify_config(settings, console=args.console)
    if not config.destinations:
        raise ConfigError(
            "no channels to notify: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID, or "
            "WECOM_WEBHOOK_KEY, or configure [candlewax.notify.channels] (docs/alerts.md); "
            "--console prints alerts to stdout"
        )
    require_broker(settings)
    ensure_topics(settings)
    serve_metrics(settings, _metrics_requested(args))
    stop = stop_on_signals()
    for line in config.describe():
        print(f"notify: {line}", flush=True)
    Notifier(settings, config).run(stop)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The gateway on uvicorn (docs/gateway.md, "Server"), until SIGINT/SIGTERM."""
    from sinks.gateway.server import run

    settings = require_broker(settings_from(args))
    ensure_topics(settings)
    run(settings)
    return 0
