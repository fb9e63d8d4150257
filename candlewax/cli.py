"""The ``candlewax`` command: the one place that wires connectors, flows and sinks together.

    candlewax broker   [--engine tansu|noida] [--port N]     embedded Kafka-protocol broker
    candlewax topics ensure                                   create trades/bars/alerts/deadletter
    candlewax replay PATH [--speed X] [--shift-ms N]          recorded traffic or trade files → trades
    candlewax synthetic [--symbols N] [--rate R]              seeded synthetic market → trades
    candlewax flow [--exit-when-done] [-w N -i I -a ADDRS]    the Bytewax bars dataflow
    candlewax recovery init DIR                               the flow's crash-recovery store
    candlewax backtest --from T --to T --out DIR              replay a time range, with a report
    candlewax bars tail | alerts tail                         print the bars / alerts topic
    candlewax notify [--console] [--from-beginning]           alerts → Telegram, WeCom, webhooks
    candlewax demo [--replay PATH] [--exit-when-done]         all of the above, one command

Settings come from ``--config FILE`` < ``CANDLEWAX_*`` environment < flags.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException

from candlewax import __version__, metrics
from candlewax.broker import ENGINES, EmbeddedBroker, die_with_parent, free_port, wait_for_broker
from candlewax.codec import DeadLetter, Trade
from candlewax.errors import BrokerError, CandlewaxError, ConfigError
from candlewax.kafka import check_properties, end_offsets
from candlewax.logs import SECRETS, setup_logging
from candlewax.settings import Settings, env_secret
from candlewax.topics import ALERTS, BARS, DEADLETTER, TRADES, ensure_topics

log = logging.getLogger("candlewax")


# --------------------------------------------------------------------------- helpers


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides = {
        "bootstrap_servers": getattr(args, "bootstrap_servers", None),
        "topic_prefix": getattr(args, "topic_prefix", None),
        "data_dir": getattr(args, "data_dir", None),
        "partitions": getattr(args, "partitions", None),
        "retention_ms": getattr(args, "retention_ms", None),
        "lateness_ms": getattr(args, "lateness_ms", None),
        "metrics_port": getattr(args, "metrics_port", None),
        "metrics_host": getattr(args, "metrics_host", None),
        **extra,
    }
    # CANDLEWAX_CONFIG names the file when --config does not (containers mount it there).
    return Settings.load(args.config or os.environ.get("CANDLEWAX_CONFIG") or None, **overrides)


def _require_broker(settings: Settings) -> Settings:
    if not settings.bootstrap_servers:
        raise ConfigError(
            "no Kafka to talk to: pass --bootstrap-servers HOST:PORT or set "
            "CANDLEWAX_BOOTSTRAP_SERVERS (start a local one with `candlewax broker`)"
        )
    check_properties(settings.kafka)
    wait_for_broker(settings.bootstrap_servers)
    return settings


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():  # second Ctrl-C: leave now
            raise KeyboardInterrupt
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return stop


def _replay_items(
    path: str, venue: str | None, fmt: str | None
) -> Iterator[tuple[int, list[Trade], list[DeadLetter]]]:
    """The items of a replay file; a missing file or unknown format fails here, at once."""
    from connectors.replay import iter_file

    items = iter_file(path, venue=venue, fmt=fmt)
    return ((item.recv_ms, item.trades, item.rejected) for item in items)


def _synthetic_items(
    symbols: int, seed: int, rate: float, start_ms: int, duration_s: float | None, paced: bool
) -> Iterator[tuple[int, list[Trade], list[DeadLetter]]]:
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


def _publish(
    settings: Settings,
    items: Iterator[tuple[int, list[Trade], list[DeadLetter]]],
    speed: float,
    shift_ms: int,
    per_message: int,
    stop: threading.Event,
    stats: Any = None,
) -> Any:
    from connectors.producer import TradeProducer
    from connectors.publish import PublishStats, publish

    stats = stats if stats is not None else PublishStats()
    producer = TradeProducer(
        settings.bootstrap_servers,
        settings.topic(TRADES),
        settings.topic(DEADLETTER),
        settings.kafka,
    )
    try:
        publish(
            items,
            producer,
            speed=speed,
            shift_ms=shift_ms,
            per_message=per_message,
            stop=stop,
            stats=stats,
        )
    finally:
        producer.flush()
    return stats


# --------------------------------------------------------------------------- commands


def cmd_broker(args: argparse.Namespace) -> int:
    stop = _stop_on_signals()
    broker = EmbeddedBroker(args.engine, args.port)
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
    settings = _require_broker(_settings(args))
    for topic, status in ensure_topics(settings).items():
        print(f"{topic}: {status}")
    return 0


def _serve_metrics(args: argparse.Namespace, settings: Settings) -> None:
    if getattr(args, "metrics_port", None) is not None:
        port = metrics.serve(settings.metrics_host, settings.metrics_port)
        print(f"metrics: http://{settings.metrics_host}:{port}/metrics", flush=True)


def cmd_replay(args: argparse.Namespace) -> int:
    settings = _require_broker(_settings(args))
    ensure_topics(settings)
    _serve_metrics(args, settings)
    from connectors.publish import PublishStats
    from connectors.replay import ReplayError

    stop = _stop_on_signals()
    stats = PublishStats()
    items = _replay_items(args.path, args.venue, args.format)
    try:
        _publish(settings, items, args.speed, args.shift_ms, args.per_message, stop, stats)
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
    settings = _require_broker(_settings(args))
    ensure_topics(settings)
    _serve_metrics(args, settings)
    stop = _stop_on_signals()
    start_ms = args.start_ms if args.start_ms is not None else int(time.time() * 1000)
    items = _synthetic_items(
        args.symbols, args.seed, args.rate, start_ms, args.duration, paced=args.speed > 0
    )
    stats = _publish(settings, items, args.speed, 0, args.per_message, stop)
    print(f"published {stats.trades} synthetic trades to {settings.topic(TRADES)}")
    return 0


def cmd_connect(args: argparse.Namespace) -> int:
    from connectors.live import LiveConnector, LiveOptions
    from connectors.producer import TradeProducer
    from connectors.venues import venue_spec

    spec = venue_spec(args.venue)
    settings = _settings(args, symbols=args.symbols or None)
    symbols = list(settings.symbols)
    if not symbols:
        raise ConfigError("no symbols: pass --symbols BTCUSDT,ETHUSDT or set symbols in the config")
    settings = _require_broker(settings)
    ensure_topics(settings)
    _serve_metrics(args, settings)
    stop = _stop_on_signals()
    producer = TradeProducer(
        settings.bootstrap_servers,
        settings.topic(TRADES),
        settings.topic(DEADLETTER),
        settings.kafka,
    )
    options = LiveOptions(
        ws_url=args.ws_url,
        rest_url=args.rest_url,
        token=env_secret(os.environ, spec.venue.token_env) if spec.venue.token_env else None,
        api_key=env_secret(os.environ, "BINANCE_API_KEY")
        if spec.name.startswith("binance")
        else None,
    )
    if args.stale_after is not None:
        options.stale_after_s = args.stale_after
    if args.ping_interval is not None:
        options.ping_interval_s = args.ping_interval
    connector = LiveConnector(spec, symbols, producer, options, stop)
    stats = connector.run(exit_after_s=args.exit_after)
    print(
        f"{spec.name}: {stats.trades} trades published ({stats.backfilled} backfilled, "
        f"{stats.duplicates} duplicates dropped, {stats.unrecovered} gaps unrecovered, "
        f"{stats.rejected} frames rejected, {stats.implausible} implausible ids, "
        f"{stats.crashes} connection crashes), reconnects {dict(sorted(stats.reconnects.items()))}"
    )
    return 0


def _flow_command(args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, "-m", "bytewax.run", "flows.bars:build()"]
    if args.workers:
        cmd += ["-w", str(args.workers)]
    if args.process_id is not None:
        cmd += ["-i", str(args.process_id)]
    if args.addresses:
        cmd += ["-a", args.addresses]
    if args.recovery_dir:
        cmd += ["-r", str(args.recovery_dir), "-s", str(args.snapshot_s), "-b", str(args.backup_s)]
    return cmd


def _flow_env(
    settings: Settings, metrics_port: int, bytewax_api_port: int | None = None
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CANDLEWAX_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
            "CANDLEWAX_TOPIC_PREFIX": settings.topic_prefix,
            "CANDLEWAX_DATA_DIR": str(settings.data_dir),
            "CANDLEWAX_LATENESS_MS": str(settings.lateness_ms),
            "CANDLEWAX_MAX_CLOCK_SKEW_MS": str(settings.max_clock_skew_ms),
            "CANDLEWAX_MAX_TIME_JUMP_MS": str(settings.max_time_jump_ms),
            "CANDLEWAX_TIME_JUMP_QUORUM": str(settings.time_jump_quorum),
            "CANDLEWAX_INTERVALS": ",".join(settings.intervals),
            "CANDLEWAX_BATCH_MAX": str(settings.batch_max),
            "CANDLEWAX_METRIC_SYMBOLS_MAX": str(settings.metric_symbols_max),
            "CANDLEWAX_ARCHIVE_TRADES": str(settings.archive_trades),
            "CANDLEWAX_EXIT_WHEN_DONE": str(settings.exit_when_done),
            "CANDLEWAX_ALERTS": orjson.dumps(dict(settings.alerts)).decode(),
            "CANDLEWAX_LOG_LEVEL": logging.getLevelName(logging.getLogger().level),
            "CANDLEWAX_METRICS_HOST": settings.metrics_host,
            "CANDLEWAX_METRICS_PORT": str(metrics_port),
        }
    )
    if bytewax_api_port is not None:  # Bytewax's own endpoint (binds 0.0.0.0): opt-in
        env["BYTEWAX_DATAFLOW_API_ENABLED"] = "1"
        env["BYTEWAX_DATAFLOW_API_PORT"] = str(bytewax_api_port)
    else:
        env.pop("BYTEWAX_DATAFLOW_API_ENABLED", None)
    if settings.kafka:
        env["CANDLEWAX_KAFKA"] = ",".join(f"{k}={v}" for k, v in settings.kafka.items())
    # The flow imports flows/ and sinks/ from this checkout even without an install.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def _recovery_parts(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.sqlite3"))


def cmd_recovery_init(args: argparse.Namespace) -> int:
    """Create the Bytewax recovery store (idempotent: an existing one is left as it is)."""
    from bytewax.recovery import init_db_dir

    directory: Path = args.directory
    existing = _recovery_parts(directory)
    if existing:
        if len(existing) != args.partitions:
            raise ConfigError(
                f"{directory} already holds a recovery store of {len(existing)} partition(s), "
                f"not {args.partitions}; use another directory, or delete it to start over "
                "(the flow then reads its input from the beginning)"
            )
        print(f"{directory}: recovery store of {len(existing)} partition(s) already there")
        return 0
    try:
        directory.mkdir(parents=True, exist_ok=True)
        init_db_dir(directory, args.partitions)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the recovery store in {directory}: {exc.strerror or exc}; "
            "choose another directory"
        ) from None
    print(f"{directory}: recovery store of {args.partitions} partition(s) created")
    return 0


def cmd_flow(args: argparse.Namespace) -> int:
    from flows.volatility import AlertRules

    if args.snapshot_s < 1 or args.backup_s < 0:
        raise ConfigError("--snapshot-s must be >= 1 and --backup-s >= 0 (whole seconds)")
    if args.recovery_dir is not None and not _recovery_parts(args.recovery_dir):
        raise ConfigError(
            f"no recovery store in {args.recovery_dir}: create it once with "
            f"`candlewax recovery init {args.recovery_dir}`"
        )

    from sinks.parquet import check_writable

    settings = _settings(args, exit_when_done=args.exit_when_done or None)
    AlertRules.parse(settings.alerts)  # bad rules fail here, not inside the dataflow
    check_writable(settings.data_dir)  # at start, not at the first Parquet write
    settings = _require_broker(settings)
    ensure_topics(settings)
    env = _flow_env(settings, settings.metrics_port, args.bytewax_api_port)
    cmd = _flow_command(args)
    log.info("running the bars flow: %s", " ".join(cmd[1:]))
    if settings.metrics_port:
        print(
            f"metrics: http://{settings.metrics_host}:{settings.metrics_port}/metrics", flush=True
        )
    os.execve(sys.executable, cmd, env)
    return 0  # pragma: no cover - exec does not return


def cmd_backtest(args: argparse.Namespace) -> int:
    from flows.backtest import parse_time, run_backtest
    from flows.volatility import AlertRules
    from sinks.report import write_report

    extra: dict[str, Any] = {}
    if args.alerts:
        extra["alerts"] = args.alerts
    settings = _settings(args, **extra)
    from sinks.parquet import check_writable

    AlertRules.parse(settings.alerts)  # bad rules fail before any reading
    between = (parse_time(args.from_time), parse_time(args.to_time))
    if between[0] >= between[1]:
        raise ConfigError(f"--from {args.from_time} is not before --to {args.to_time}")
    check_writable(args.out)
    symbols = (
        frozenset(s.strip().upper() for s in args.symbols.split(",") if s.strip())
        if args.symbols
        else None
    )
    if args.from_archive is None:
        settings = _require_broker(settings)
    summary = run_backtest(settings, between, args.out, symbols, args.from_archive)
    report = write_report(args.out, summary, _read_jsonl(args.out / "alerts.jsonl"))
    print(
        f"backtest: {summary['bars']} bars, {summary['alerts']} alerts "
        f"{summary['alerts_by_rule']}, {summary['deadletters']} dead letters in "
        f"{summary['seconds']} s"
    )
    print(f"bars: {args.out / 'bars'}  alerts: {args.out / 'alerts.jsonl'}  report: {report}")
    return 0


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def _tail(args: argparse.Namespace, topic_name: str) -> int:
    """Print a topic as JSON lines from the beginning until Ctrl-C (``--interval`` filters)."""
    from candlewax.codec import Alert, Bar, ParseError
    from sinks.console import follow

    settings = _require_broker(_settings(args))
    stop = _stop_on_signals()
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

    follow(settings.bootstrap_servers, [settings.topic(topic_name)], on_value, stop)
    return 0


def cmd_bars_tail(args: argparse.Namespace) -> int:
    return _tail(args, BARS)


def cmd_alerts_tail(args: argparse.Namespace) -> int:
    return _tail(args, ALERTS)


def _notify_config(settings: Settings, console: bool = False, **top: Any) -> Any:
    from sinks.notify.config import NotifyConfig, channels_from_env

    raw = dict(settings.notify)
    raw.update({k: v for k, v in top.items() if v is not None})
    if console:
        raw["channels"] = {
            **(raw.get("channels") or channels_from_env(os.environ)),
            "console": {"type": "console"},
        }
    return NotifyConfig.parse(
        raw,
        os.environ,
        telegram_api_url=settings.telegram_api_url,
        wecom_api_url=settings.wecom_api_url,
        data_dir=settings.data_dir,
    )


def cmd_notify(args: argparse.Namespace) -> int:
    from sinks.notify.notifier import Notifier

    settings = _settings(args)
    config = _notify_config(
        settings,
        console=args.console,
        group_id=args.group_id,
        state_file=str(args.state_file) if args.state_file else None,
        start="earliest" if args.from_beginning else None,
    )
    if not config.destinations:
        raise ConfigError(
            "no channels to notify: set TELEGRAM_BOT_TOKEN and TELEGRAM_CHAT_ID, or "
            "WECOM_WEBHOOK_KEY, or configure [candlewax.notify.channels] (docs/alerts.md); "
            "--console prints alerts to stdout"
        )
    _require_broker(settings)
    ensure_topics(settings)
    _serve_metrics(args, settings)
    stop = _stop_on_signals()
    for line in config.describe():
        print(f"notify: {line}", flush=True)
    Notifier(settings, config).run(stop)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from sinks.console import redraw, start_board

    stop = _stop_on_signals()
    broker: EmbeddedBroker | None = None
    flow: subprocess.Popen[bytes] | None = None
    board: Any = None
    notifier: Any = None
    settings = _settings(
        args,
        retention_ms=-1 if args.retention_ms is None else args.retention_ms,
        exit_when_done=args.exit_when_done or None,
        partitions=args.partitions,
    )
    from sinks.parquet import check_writable

    check_writable(settings.data_dir)
    items = _replay_items(args.replay, args.venue, None) if args.replay else None
    check_properties(settings.kafka)
    try:
        if not settings.bootstrap_servers:
            broker = EmbeddedBroker(args.engine)
            settings = settings.replace(bootstrap_servers=broker.start())
        else:
            wait_for_broker(settings.bootstrap_servers)
        ensure_topics(settings)
        port = args.metrics_port if args.metrics_port else free_port()
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        connector_port = metrics.serve(settings.metrics_host, 0)
        connector_url = f"http://{settings.metrics_host}:{connector_port}/metrics"
        source = (
            f"replay of {args.replay}"
            if args.replay
            else f"synthetic market, {args.symbols} symbols"
        )
        notifier = _demo_notifier(settings, stop)
        header = [
            f"candlewax {__version__} demo — {source}",
            f"kafka: {settings.bootstrap_servers}"
            f"{f' (embedded {args.engine})' if broker else ''}   parquet: {settings.data_dir.resolve()}",
            f"metrics: {metrics_url} (flow)  {connector_url} (market)   Ctrl-C to stop",
            "notify: "
            + (
                "; ".join(notifier.config.describe())
                if notifier
                else "console only (set TELEGRAM_BOT_TOKEN + TELEGRAM_CHAT_ID or WECOM_WEBHOOK_KEY to send)"
            ),
        ]
        if items is not None:
            speed = args.speed if args.speed is not None else 0.0
        else:
            start_ms = int(time.time() * 1000)
            paced = not args.exit_when_done
            items = _synthetic_items(
                args.symbols, args.seed, args.rate, start_ms, args.duration, paced=paced
            )
            speed = 1.0 if paced else 0.0
        published: list[Any] = []
        failed: list[BaseException] = []

        def publish_all() -> None:
            try:
                published.append(_publish(settings, items, speed, 0, 1, stop))
            except BaseException as exc:  # said in the main thread, never a thread traceback
                failed.append(exc)
                stop.set()

        publisher = threading.Thread(target=publish_all, name="publisher", daemon=True)
        publisher.start()
        if settings.exit_when_done:
            # Finite input: publish everything first, so end-of-partition means end of input.
            while publisher.is_alive() and not stop.is_set():
                publisher.join(0.2)
            _raise_first(failed)
            if stop.is_set():
                return 130
        board = start_board(
            settings.bootstrap_servers,
            settings.topic(BARS),
            settings.topic(DEADLETTER),
            stop,
            trades_topic=settings.topic(TRADES),
            alerts_topic=settings.topic(ALERTS),
        )
        # Its own session: a terminal Ctrl-C reaches the demo, which then stops the flow itself.
        flow = subprocess.Popen(
            [sys.executable, "-m", "bytewax.run", "flows.bars:build()"],
            env=_flow_env(settings, port),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        while not stop.is_set():
            if flow.poll() is not None:
                break
            redraw(board.render(header))
            if stop.wait(1.0 if sys.stdout.isatty() else 5.0):
                break
        code = flow.poll()
        if code is None:  # we are stopping it: a live flow has no natural end
            flow.terminate()
            flow.wait(timeout=30)
        elif code != 0:
            raise CandlewaxError(f"the bars flow exited with code {code} (see its log above)")
        if settings.exit_when_done:
            _wait_for_bars(board, settings.data_dir, timeout_s=10)
            if notifier is not None:  # every alert sent before the demo ends (bounded wait)
                ends = end_offsets(
                    settings.bootstrap_servers, settings.topic(ALERTS), settings.kafka
                )
                deadline = time.monotonic() + 120
                while not notifier.caught_up(ends) and time.monotonic() < deadline:
                    time.sleep(0.1)
        _raise_first(failed)
        stats = published[0] if published else None
        redraw(board.render(header))
        if stats is not None:
            print(
                f"published {stats.trades} trades ({stats.rejected} rejected); bars in {settings.data_dir}"
            )
        return 0
    finally:
        stop.set()
        if flow is not None and flow.poll() is None:
            flow.terminate()
            flow.wait(timeout=30)
        if board is not None and board.thread is not None:
            board.thread.join(timeout=5)  # its consumer closes before the broker goes away
        if notifier is not None and notifier.thread is not None:
            notifier.thread.join(timeout=30)  # it commits what it delivered before the broker goes
        if broker is not None:
            broker.stop()


def _raise_first(failed: list[BaseException]) -> None:
    if failed:
        exc = failed[0]
        if isinstance(exc, CandlewaxError):
            raise exc
        raise CandlewaxError(f"publishing the market failed: {type(exc).__name__}: {exc}") from exc


def _demo_notifier(settings: Settings, stop: threading.Event) -> Any:
    """With credentials in the environment (or a [candlewax.notify] table), the demo sends its
    alerts for real: a notifier thread from the first alert on."""
    from sinks.notify.notifier import Notifier

    config = _notify_config(settings, start="earliest", group_id=f"candlewax-demo-{os.getpid()}")
    if not config.destinations:
        return None
    notifier = Notifier(settings, config)
    notifier.start(stop)
    return notifier


def _wait_for_bars(board: Any, data_dir: Path, timeout_s: float) -> None:
    """After the flow exited, let the console catch up with the bars topic (bounded wait)."""
    files = sum(1 for _ in (data_dir / "bars").rglob("*.parquet"))
    deadline = time.monotonic() + timeout_s
    while board.total() < files and time.monotonic() < deadline:
        time.sleep(0.1)


# --------------------------------------------------------------------------- parser


def _common(p: argparse.ArgumentParser, data: bool = False) -> None:
    p.add_argument("--config", type=Path, default=None, help="TOML settings file")
    p.add_argument(
        "--bootstrap-servers",
        help="Kafka bootstrap servers (env CANDLEWAX_BOOTSTRAP_SERVERS)",
    )
    p.add_argument("--topic-prefix", help="prefix of every topic name")
    p.add_argument("--partitions", type=int, help="partitions of topics candlewax creates")
    p.add_argument("--retention-ms", type=int, help="retention.ms of topics candlewax creates")
    if data:
        p.add_argument("--data-dir", type=Path, help="where Parquet goes (default ./data)")
        p.add_argument("--lateness-ms", type=int, help="allowed lateness behind the watermark")
        _metrics_flags(p)


def _metrics_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on this port")
    p.add_argument("--metrics-host", help="address of /metrics (default 127.0.0.1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="candlewax", description="Exchange trades in, exact event-time bars out, on Kafka."
    )
    parser.add_argument("--version", action="version", version=f"candlewax {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("broker", help="run the embedded Kafka-protocol broker")
    p.add_argument("--engine", choices=ENGINES, default="tansu")
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("topics", help="manage topics")
    tsub = p.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("ensure", help="create missing topics (idempotent)")
    _common(t)
    t.set_defaults(func=cmd_topics)

    p = sub.add_parser("connect", help="live venue websocket → trades (gap-free, backfilled)")
    _common(p)
    _metrics_flags(p)
    p.add_argument("venue", help="binance, binance-usdm, coinbase, okx, bybit or finnhub")
    p.add_argument(
        "--symbols", help="comma-separated, e.g. BTCUSDT,ETHUSDT (or `symbols` in the config)"
    )
    p.add_argument("--ws-url", help="websocket base URL (testnets, proxies, tests)")
    p.add_argument("--rest-url", help="REST base URL for backfill")
    p.add_argument("--exit-after", type=float, default=None, help="stop cleanly after N seconds")
    p.add_argument(
        "--stale-after", type=float, default=None, help="seconds without any frame = stale"
    )
    p.add_argument("--ping-interval", type=float, default=None, help="seconds between our pings")
    p.set_defaults(func=cmd_connect)

    p = sub.add_parser("replay", help="publish recorded traffic or a trade file to trades")
    _common(p)
    _metrics_flags(p)
    p.add_argument("path", help="hftbacktest .gz, cryptofeed capture, .ndjson, .csv or .parquet")
    p.add_argument("--venue", help="venue name when the file does not say")
    p.add_argument("--format", choices=["hftbacktest", "cryptofeed", "ndjson", "csv", "parquet"])
    p.add_argument(
        "--speed", type=float, default=0.0, help="0 = as fast as possible, 1 = real time"
    )
    p.add_argument("--shift-ms", type=int, default=0, help="add to event and receive times")
    p.add_argument(
        "--per-message", type=int, default=1, help="trades per Kafka message (JSON array)"
    )
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser("synthetic", help="publish a seeded synthetic market to trades")
    _common(p)
    _metrics_flags(p)
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=200.0, help="trades per second, all symbols")
    p.add_argument(
        "--duration", type=float, default=None, help="seconds of event time (default: forever)"
    )
    p.add_argument(
        "--speed", type=float, default=1.0, help="0 = as fast as possible, 1 = real time"
    )
    p.add_argument(
        "--start-ms", type=int, default=None, help="event time of the start (default: now)"
    )
    p.add_argument("--per-message", type=int, default=1)
    p.set_defaults(func=cmd_synthetic)

    p = sub.add_parser("flow", help="run the bars dataflow (python -m bytewax.run underneath)")
    _common(p, data=True)
    p.add_argument("--exit-when-done", action="store_true", help="flush and exit at end of input")
    p.add_argument("-w", "--workers", type=int, default=None, help="worker threads per process")
    p.add_argument("-i", "--process-id", type=int, default=None)
    p.add_argument("-a", "--addresses", default=None, help='"host:port;host:port" of all processes')
    p.add_argument(
        "--bytewax-api-port",
        type=int,
        default=None,
        help="also serve Bytewax's own API and bytewax_* metrics here (binds all interfaces)",
    )
    p.add_argument(
        "-r",
        "--recovery-dir",
        type=Path,
        default=None,
        help="resume after a crash from this store (`candlewax recovery init DIR` first)",
    )
    p.add_argument(
        "-s", "--snapshot-s", type=int, default=10, help="snapshot interval, whole seconds"
    )
    p.add_argument(
        "-b", "--backup-s", type=int, default=0, help="keep old snapshots this long, whole s"
    )
    p.set_defaults(func=cmd_flow)

    p = sub.add_parser(
        "backtest", help="run the flow over a time range of trades into a directory, with a report"
    )
    _common(p)
    p.add_argument("--from", dest="from_time", required=True, help="ISO 8601 (UTC) or epoch ms")
    p.add_argument("--to", dest="to_time", required=True, help="end, exclusive")
    p.add_argument("--out", type=Path, required=True, help="directory for bars, alerts, report")
    p.add_argument("--symbols", help="only these symbols (comma-separated)")
    p.add_argument("--alerts", help="detector rules as JSON (overrides --config / env)")
    p.add_argument("--lateness-ms", type=int, help="allowed lateness behind the watermark")
    p.add_argument(
        "--from-archive", type=Path, help="read a Parquet trade archive (DATA_DIR/trades)"
    )
    p.set_defaults(func=cmd_backtest)

    p = sub.add_parser("recovery", help="the flow's crash-recovery store")
    init = p.add_subparsers(dest="action", required=True).add_parser(
        "init", help="create the recovery store for `candlewax flow -r DIR` (idempotent)"
    )
    init.add_argument("directory", type=Path)
    init.add_argument(
        "--partitions", type=int, default=1, help="recovery partitions (sqlite files), default 1"
    )
    init.set_defaults(func=cmd_recovery_init)

    for name, func in (("bars", cmd_bars_tail), ("alerts", cmd_alerts_tail)):
        p = sub.add_parser(name, help=f"read the {name} topic")
        tail = p.add_subparsers(dest="action", required=True).add_parser(
            "tail", help=f"print {name} as JSON lines, from the beginning"
        )
        _common(tail)
        tail.add_argument("--interval", action="append", help="only this interval (repeatable)")
        tail.set_defaults(func=func)

    p = sub.add_parser("notify", help="alerts → Telegram / WeCom robot / webhooks (consumer group)")
    _common(p)
    _metrics_flags(p)
    p.add_argument("--group-id", help="consumer group (default candlewax-notify)")
    p.add_argument(
        "--state-file", type=Path, help="SQLite of delivered ids (DATA_DIR/notify.sqlite3)"
    )
    p.add_argument("--data-dir", type=Path, help="default home of the state file (./data)")
    p.add_argument(
        "--from-beginning",
        action="store_true",
        help="a new consumer group starts at the oldest alert (default: only new alerts)",
    )
    p.add_argument("--console", action="store_true", help="also print every alert to stdout")
    p.set_defaults(func=cmd_notify)

    p = sub.add_parser("demo", help="broker + market + flow + console, one command")
    _common(p, data=True)
    p.add_argument("--engine", choices=ENGINES, default="tansu")
    p.add_argument("--replay", help="replay this recording instead of the synthetic market")
    p.add_argument("--venue", help="venue of the replayed file when it does not say")
    p.add_argument("--speed", type=float, default=None, help="replay speed (default: fastest)")
    p.add_argument("--symbols", type=int, default=10)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=200.0, help="synthetic trades per second")
    p.add_argument("--duration", type=float, default=None, help="synthetic seconds of event time")
    p.add_argument(
        "--exit-when-done", action="store_true", help="finite input: exit when all bars are written"
    )
    p.set_defaults(func=cmd_demo, partitions=2)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.command == "demo" and args.exit_when_done and not args.replay and args.duration is None:
        print("candlewax: error: --exit-when-done needs --replay or --duration", file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except CandlewaxError as exc:
        _error(str(exc), args.log_level)
        return 1
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        _error(
            f"Kafka: {text} (check --bootstrap-servers and the kafka properties)", args.log_level
        )
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: still one line, the traceback on request
        _error(
            f"internal error: {type(exc).__name__}: {exc} — please report it; "
            "--log-level DEBUG shows the traceback",
            args.log_level,
        )
        return 70


def _error(message: str, level: str) -> None:
    """One line on stderr, secrets masked; the traceback too at --log-level DEBUG."""
    if level.upper() == "DEBUG":
        log.debug("the error's traceback:", exc_info=True)
    print(f"candlewax: error: {SECRETS.redact(message)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
