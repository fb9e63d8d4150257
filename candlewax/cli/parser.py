"""The ``candlewax`` command line: subcommands, their options, and which flags are settings.

Parsing only — nothing here starts a process or opens a connection. A flag that sets a setting
is declared with :func:`setting` and lands in the namespace as ``setting__<name>`` (nested
settings as ``setting__notify__group_id``); :func:`flag_settings` turns those into the flags
layer of :meth:`candlewax.settings.Settings.load`, above the file and the environment.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from candlewax import __version__
from candlewax.broker import ENGINES

_PREFIX = "setting__"


def setting(
    p: argparse.ArgumentParser | argparse._ArgumentGroup,
    flags: str | tuple[str, ...],
    name: str,
    help: str,
    **kwargs: Any,
) -> None:
    """``flags`` (one option string or several) set the setting ``name`` (dotted for a nested
    one: ``notify.group_id``)."""
    names = (flags,) if isinstance(flags, str) else flags
    p.add_argument(*names, dest=_dest(name), default=None, help=help, **kwargs)


def _dest(name: str) -> str:
    return _PREFIX + name.replace(".", "__")


def flag(args: argparse.Namespace, name: str) -> Any:
    """The value the command line gave the setting ``name``; None when not given."""
    return getattr(args, _dest(name), None)


def flag_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags on this command line set (unset flags are absent)."""
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        if not dest.startswith(_PREFIX) or value is None:
            continue
        *parents, leaf = dest[len(_PREFIX) :].split("__")
        table = out
        for parent in parents:
            table = table.setdefault(parent, {})
        table[leaf] = value
    return out


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def _cluster(p: argparse.ArgumentParser) -> None:
    setting(p, ("-i", "--process-id"), "cluster.process_id", "this process's index in the cluster (0-based)", type=int)  # fmt: skip
    setting(p, ("-a", "--addresses"), "cluster.addresses", '"host:port;host:port" of all processes, in order')  # fmt: skip


def _kafka(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="TOML settings file")
    setting(p, "--bootstrap-servers", "bootstrap_servers", "Kafka bootstrap servers")
    setting(p, "--topic-prefix", "topic_prefix", "prefix of every topic name")
    setting(p, "--partitions", "partitions", "partitions of topics candlewax creates", type=int)
    setting(p, "--retention-ms", "retention_ms", "retention.ms of topics candlewax creates", type=int)  # fmt: skip


def _data(p: argparse.ArgumentParser) -> None:
    setting(p, "--data-dir", "data_dir", "where Parquet goes: a directory or s3://bucket/prefix")
    setting(p, "--lateness-ms", "lateness_ms", "allowed lateness behind the watermark", type=int)


def _metrics(p: argparse.ArgumentParser) -> None:
    setting(p, "--metrics-port", "metrics_port", "serve Prometheus /metrics on this port", type=int)  # fmt: skip
    setting(p, "--metrics-host", "metrics_host", "address of /metrics (default 127.0.0.1)")


def build_parser(commands: Mapping[str, Callable[[argparse.Namespace], int]]) -> argparse.ArgumentParser:  # fmt: skip
    """The parser; ``commands`` maps each subcommand's name to the function that runs it."""
    parser = argparse.ArgumentParser(
        prog="candlewax", description="Exchange trades in, exact event-time bars out, on Kafka."
    )
    parser.add_argument("--version", action="version", version=f"candlewax {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help: str, parent: Any = sub, func: str | None = None) -> Any:
        p = parent.add_parser(name, help=help)
        p.set_defaults(func=commands[func or name])
        return p

    p = command("broker", "run the embedded Kafka-protocol broker")
    p.add_argument("--engine", choices=ENGINES, default="tansu")
    p.add_argument("--port", type=int, default=None, help="port on 127.0.0.1 (default: a free one)")
    p.add_argument("--cert", type=Path, help="serve TLS with this PEM certificate (tansu; needs stunnel)")  # fmt: skip
    p.add_argument("--key", type=Path, help="the certificate's private key (PEM)")
    p.add_argument("--client-ca", type=Path, help="mutual TLS: client certificates must chain to this CA")  # fmt: skip

    topics = sub.add_parser("topics", help="manage topics").add_subparsers(
        dest="action", required=True
    )
    _kafka(command("ensure", "create missing topics (idempotent)", topics, "topics"))

    p = command("connect", "live venue websocket → trades (gap-free, backfilled)")
    _kafka(p)
    _metrics(p)
    _live(p)
    p.add_argument("--rest-url", help="REST base URL for backfill and the start-up fill")
    p.add_argument(
        "--no-fill", action="store_true",
        help="no start-up fill: do not fetch the current window's trades over REST at start",
    )  # fmt: skip
    p.add_argument(
        "--fill-max-requests", type=int, default=None,
        help="REST requests per symbol the start-up fill may send (default 120)",
    )  # fmt: skip

    p = command("record", "live venue websocket → raw frames in hourly gzip files (no Kafka)")
    p.add_argument("--config", type=Path, default=None, help="TOML settings file (symbols)")
    _live(p)
    p.add_argument("--out", type=Path, required=True, help="directory of the hourly .gz files")

    p = command("replay", "publish recorded traffic or a trade file to trades")
    _kafka(p)
    _metrics(p)
    p.add_argument("path", help="hftbacktest .gz, cryptofeed capture, .ndjson, .csv or .parquet")
    p.add_argument("--venue", help="venue name when the file does not say")
    p.add_argument("--format", choices=["hftbacktest", "cryptofeed", "ndjson", "csv", "parquet"])
    p.add_argument("--speed", type=float, default=0.0, help="0 = as fast as possible, 1 = real time")  # fmt: skip
    p.add_argument("--shift-ms", type=int, default=0, help="add to event and receive times")
    p.add_argument("--per-message", type=int, default=1, help="trades per Kafka message (JSON array)")  # fmt: skip

    p = command("synthetic", "publish a seeded synthetic market to trades")
    _kafka(p)
    _metrics(p)
    _market(p)
    p.add_argument("--speed", type=float, default=1.0, help="0 = as fast as possible, 1 = real time")  # fmt: skip
    p.add_argument("--start-ms", type=int, default=None, help="event time of the start (default: now)")  # fmt: skip
    p.add_argument("--per-message", type=int, default=1)

    p = command("flow", "run the bars dataflow, alone or as one process of a cluster")
    _kafka(p)
    _data(p)
    _metrics(p)
    setting(p, "--exit-when-done", "exit_when_done", "flush and exit at end of input", action="store_const", const=True)  # fmt: skip
    setting(p, ("-w", "--workers"), "cluster.workers", "worker threads per process", type=int)
    _cluster(p)
    setting(p, "--bytewax-api-port", "cluster.bytewax_api_port", "also serve Bytewax's own API and bytewax_* metrics here (binds all interfaces)", type=int)  # fmt: skip
    setting(p, ("-r", "--recovery-dir"), "recovery.directory", "resume after a crash from this store (`candlewax recovery init DIR` first)")  # fmt: skip
    setting(p, ("-s", "--snapshot-s"), "recovery.snapshot_s", "snapshot interval, whole seconds", type=int)  # fmt: skip
    setting(p, ("-b", "--backup-s"), "recovery.backup_s", "keep old snapshots this long, whole seconds", type=int)  # fmt: skip

    p = command("backtest", "run the flow over a time range of trades into a directory, with a report")  # fmt: skip
    _kafka(p)
    p.add_argument("--from", dest="from_time", required=True, help="ISO 8601 (UTC) or epoch ms")
    p.add_argument("--to", dest="to_time", required=True, help="end, exclusive")
    p.add_argument("--out", required=True, help="directory (or s3://...) for bars, alerts, report")
    p.add_argument("--symbols", help="only these symbols (comma-separated)")
    setting(p, "--alerts", "alerts", "detector rules as JSON (overrides --config / env)", type=_json)  # fmt: skip
    setting(p, "--lateness-ms", "lateness_ms", "allowed lateness behind the watermark", type=int)
    p.add_argument("--from-archive", help="read a Parquet trade archive (DATA_DIR/trades)")

    recovery = sub.add_parser("recovery", help="the flow's crash-recovery store")
    p = command(
        "init",
        "create the recovery store for `candlewax flow -r DIR` (idempotent)",
        recovery.add_subparsers(dest="action", required=True),
        "recovery_init",
    )
    p.add_argument("directory", type=Path)
    p.add_argument("--partitions", type=int, default=None, help="recovery partitions (sqlite files; default 1)")  # fmt: skip
    p.add_argument("--only", type=int, default=None, help="keep only this partition here (one directory per process)")  # fmt: skip
    p.add_argument("--per-process", action="store_true", help="one partition per process of the cluster the settings, -i/-a or the StatefulSet describe: keep this process's one")  # fmt: skip
    _cluster(p)

    for name in ("bars", "alerts"):
        tail = sub.add_parser(name, help=f"read the {name} topic").add_subparsers(
            dest="action", required=True
        )
        p = command("tail", f"print {name} as JSON lines, from the beginning", tail, f"{name}_tail")
        _kafka(p)
        p.add_argument("--interval", action="append", help="only this interval (repeatable)")

    p = command("notify", "alerts → Telegram / WeCom robot / webhooks (consumer group)")
    _kafka(p)
    _metrics(p)
    setting(p, "--group-id", "notify.group_id", "consumer group (default candlewax-notify)")
    setting(p, "--state-file", "notify.state_file", "SQLite of delivered ids (DATA_DIR/notify.sqlite3)")  # fmt: skip
    setting(p, "--data-dir", "data_dir", "default home of the state file (./data)")
    setting(p, "--from-beginning", "notify.start", "a new consumer group starts at the oldest alert (default: only new alerts)", action="store_const", const="earliest")  # fmt: skip
    p.add_argument("--console", action="store_true", help="also print every alert to stdout")

    p = command("serve", "the market-data gateway: WebSocket streams, klines API, chart page")
    _kafka(p)
    _data(p)
    setting(p, "--host", "gateway.host", "address to listen on (default 127.0.0.1)")
    setting(p, "--port", "gateway.port", "port of streams, REST, page and /metrics (default 8080)", type=int)  # fmt: skip
    setting(p, "--default-venue", "gateway.default_venue", "venue of streams that name none (default binance)")  # fmt: skip

    p = command("demo", "broker + market + flow + console, one command")
    _kafka(p)
    _data(p)
    _metrics(p)
    _market(p)
    p.add_argument("--engine", choices=ENGINES, default="tansu")
    p.add_argument("--replay", help="replay this recording instead of the synthetic market")
    p.add_argument("--venue", help="venue of the replayed file when it does not say")
    p.add_argument("--speed", type=float, default=None, help="replay speed (default: fastest)")
    setting(p, "--exit-when-done", "exit_when_done", "finite input: exit when all bars are written", action="store_const", const=True)  # fmt: skip
    return parser


def _live(p: argparse.ArgumentParser) -> None:
    """A live venue connection's options (``connect`` and ``record``)."""
    p.add_argument("venue", help="binance, binance-usdm, coinbase, okx, bybit or finnhub")
    setting(p, "--symbols", "symbols", "comma-separated, e.g. BTCUSDT,ETHUSDT")
    p.add_argument("--ws-url", help="websocket base URL (testnets, proxies, tests)")
    p.add_argument("--exit-after", type=float, default=None, help="stop cleanly after N seconds")
    p.add_argument(
        "--stale-after", type=float, default=None, help="seconds without any frame = stale"
    )
    p.add_argument("--ping-interval", type=float, default=None, help="seconds between our pings")


def _market(p: argparse.ArgumentParser) -> None:
    """The synthetic market's shape (not settings: the market is a tool, not the pipeline)."""
    p.add_argument("--symbols", type=int, default=10, help="synthetic symbols")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--rate", type=float, default=200.0, help="synthetic trades per second")
    p.add_argument("--duration", type=float, default=None, help="seconds of event time (default: forever)")  # fmt: skip
