"""One typed Settings object, built once at the entry point from a TOML file, the environment
(``CANDLEWAX_*``) and command-line flags — in that order of precedence, flags last — then passed
down. Unknown keys are errors (a typo never passes silently); secrets never print.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from candlewax.codec import INTERVALS
from candlewax.errors import ConfigError
from candlewax.logs import SECRETS

ENV_PREFIX = "CANDLEWAX_"
_SECRET_HINTS = ("password", "secret", "token", "key")


@dataclass(frozen=True)
class Settings:
    """Everything a candlewax process needs to know. See docs/configuration.md."""

    #: Kafka bootstrap servers; empty means "start the embedded broker" (demo) or an error.
    bootstrap_servers: str = ""
    #: Prefix of every topic name (``prod.`` → ``prod.trades``).
    topic_prefix: str = ""
    #: Partitions of ``trades`` (and ``bars``/``alerts``) when candlewax creates them.
    partitions: int = 4
    replication_factor: int = 1
    #: ``retention.ms`` of topics candlewax creates; -1 keeps everything (replays, tests).
    retention_ms: int | None = None
    #: Where Parquet goes: DATA_DIR/bars/..., DATA_DIR/trades/...
    data_dir: Path = Path("data")
    #: Bar intervals; 1m is built from trades, the others are rollups of 1m bars.
    intervals: tuple[str, ...] = tuple(INTERVALS)
    #: How far behind the newest event time of its partition a trade may arrive and still count.
    lateness_ms: int = 2_000
    #: Event-time plausibility (docs/reliability.md): a record's ts_ms may run at most this far
    #: ahead of its recv_ms ...
    max_clock_skew_ms: int = 60_000
    #: ... and one more than this ahead of its partition's event time is held until records of
    #: time_jump_quorum distinct messages agree with it (or as many carry on at the old time).
    max_time_jump_ms: int = 60_000
    time_jump_quorum: int = 3
    #: Most Kafka messages one source poll hands to the flow as one batch.
    batch_max: int = 10_000
    #: Consumer group of the flow (offsets are kept by Bytewax recovery, not the group).
    group_id: str = "candlewax-flow"
    #: Write the raw trade archive DATA_DIR/trades/... as well as bars.
    archive_trades: bool = True
    #: Finite input: at the end of every partition close all windows and exit.
    exit_when_done: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    #: Per-symbol market gauges (close, range, volume, last alert) for at most this many
    #: symbols, the first seen; 0 turns them off.
    metric_symbols_max: int = 50
    #: Volatility detector rules (docs/alerts.md): a TOML table [candlewax.alerts], or JSON in
    #: CANDLEWAX_ALERTS. Empty: the defaults.
    alerts: Mapping[str, Any] = field(default_factory=dict)
    #: Notifier channels, routes and delivery (docs/alerts.md): a TOML table
    #: [candlewax.notify], or JSON in CANDLEWAX_NOTIFY. Empty: channels from TELEGRAM_* /
    #: WECOM_* environment variables.
    notify: Mapping[str, Any] = field(default_factory=dict)
    #: Base URLs of the Telegram Bot API and the WeCom robot API (proxies, tests).
    telegram_api_url: str = "https://api.telegram.org"
    wecom_api_url: str = "https://qyapi.weixin.qq.com"
    #: Symbols for `candlewax connect` when --symbols is not given.
    symbols: tuple[str, ...] = ()
    #: Extra librdkafka settings (security.protocol, sasl.*...) for every client.
    kafka: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.partitions < 1:
            problems.append(f"partitions={self.partitions} must be >= 1")
        if self.replication_factor < 1:
            problems.append(f"replication_factor={self.replication_factor} must be >= 1")
        if self.lateness_ms < 0:
            problems.append(f"lateness_ms={self.lateness_ms} must be >= 0")
        if self.max_clock_skew_ms < 0:
            problems.append(f"max_clock_skew_ms={self.max_clock_skew_ms} must be >= 0")
        if self.max_time_jump_ms < 0:
            problems.append(f"max_time_jump_ms={self.max_time_jump_ms} must be >= 0")
        if self.time_jump_quorum < 1:
            problems.append(f"time_jump_quorum={self.time_jump_quorum} must be >= 1")
        if self.batch_max < 1:
            problems.append(f"batch_max={self.batch_max} must be >= 1")
        unknown = [i for i in self.intervals if i not in INTERVALS]
        if unknown:
            problems.append(f"intervals {unknown} unknown; choose from {', '.join(INTERVALS)}")
        if "1m" not in self.intervals:
            problems.append("intervals must include 1m (the others are rolled up from it)")
        if not 0 <= self.metrics_port < 65536:
            problems.append(f"metrics_port={self.metrics_port} is not a TCP port")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))

    def __repr__(self) -> str:
        shown = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("kafka", "notify"):
                value = _masked(value)
            shown[f.name] = value
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        **overrides: Any,
    ) -> Settings:
        """File (TOML, table ``[candlewax]`` or top level) < environment < explicit overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            try:
                doc = tomllib.loads(p.read_text(encoding="utf-8"))
            except FileNotFoundError:
                raise ConfigError(f"config file {p} does not exist: check --config") from None
            except IsADirectoryError:
                raise ConfigError(
                    f"config file {p} is a directory: pass the TOML file with --config"
                ) from None
            except PermissionError:
                raise ConfigError(
                    f"config file {p} cannot be read (permission denied): fix its permissions"
                ) from None
            except UnicodeDecodeError:
                raise ConfigError(
                    f"config file {p} is not UTF-8 text: is it a TOML file?"
                ) from None
            except OSError as exc:
                raise ConfigError(f"config file {p} cannot be read: {exc.strerror}") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
            if not isinstance(doc.get("candlewax", doc), dict):
                raise ConfigError(f"config file {p}: [candlewax] must be a table")
            doc = doc.get("candlewax", doc)
            values.update(_coerce_all(doc, f"config file {p}"))
        env = os.environ if env is None else env
        env_values = {
            k[len(ENV_PREFIX) :].lower(): v for k, v in env.items() if k.startswith(ENV_PREFIX)
        }
        names = {f.name for f in dataclasses.fields(cls)}  # CANDLEWAX_CONFIG/LOG_LEVEL are not
        # The environment also carries variables of other tools; only our field names count.
        values.update(
            _coerce_all({k: v for k, v in env_values.items() if k in names}, "environment")
        )
        values.update(_coerce_all({k: v for k, v in overrides.items() if v is not None}, "flag"))
        return cls(**values)


def env_secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from the environment: ``NAME``, else the file named by ``NAME_FILE`` (a mounted
    Kubernetes secret); None when neither is set. Registered for redaction at once."""
    value = env.get(name)
    if not value and env.get(f"{name}_FILE"):
        path = Path(env[f"{name}_FILE"])
        try:
            value = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise ConfigError(f"{name}_FILE={path} cannot be read: {reason}") from None
    value = value.strip() if value else None
    SECRETS.add(value)
    return value or None


def _masked(value: Any) -> Any:
    """A copy with secret-looking values (token, key, secret, password, webhook url) as ***."""
    if isinstance(value, Mapping):
        return {
            k: "***" if any(h in str(k).lower() for h in (*_SECRET_HINTS, "url")) else _masked(v)
            for k, v in value.items()
        }
    return value


def _coerce_all(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(
                f"unknown setting {key!r} in {where}; known: {', '.join(sorted(fields))}"
            )
        out[key] = _coerce(key, value, fields[key].type, where)
    return out


def _coerce(key: str, value: Any, typ: Any, where: str) -> Any:
    text = str(typ)
    try:
        if key in ("alerts", "notify"):
            if isinstance(value, str):
                value = orjson.loads(value)
            if not isinstance(value, Mapping):
                raise ValueError(f"{key} must be a table (TOML) or a JSON object")
            return dict(value)
        if key == "kafka":
            if isinstance(value, str):
                out = {}
                for part in (p for p in value.split(",") if p.strip()):
                    name, sep, item = part.partition("=")
                    if not sep or not name.strip():
                        raise ValueError(
                            f"{part.strip()[:40]!r} is not property=value (e.g. "
                            "security.protocol=SASL_SSL,sasl.mechanism=PLAIN)"
                        )
                    out[name.strip()] = item.strip()
                return out
            if not isinstance(value, Mapping):
                raise ValueError("kafka must be a table of librdkafka properties")
            return {str(k): str(v) for k, v in value.items()}
        if key in ("intervals", "symbols"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(i.strip() for i in items if i.strip())
        if "Path" in text:
            return Path(value)
        if "bool" in text:
            if isinstance(value, bool):
                return value
            lowered = str(value).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
        if "int" in text:
            if value in ("", "none", None) and "None" in text:
                return None
            return int(value)
        return str(value)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise ConfigError(f"setting {key!r} in {where}: {exc}") from None
