"""One typed, frozen Settings object, built once at the entry point from a TOML file, the
environment (``CANDLEWAX_*``) and command-line flags — flags win, then the environment, then the
file — and handed whole to every part, child processes included (:meth:`Settings.to_json`).

pydantic does the typing and the checks; pydantic-settings reads the environment (lists as
``a,b,c`` or JSON, tables as JSON, one member of a table as ``CANDLEWAX_ALERTS__COOLDOWN_MS``).
Unknown keys are errors (a typo never passes silently), every error names the setting and where
it came from, and secrets — Kafka passwords, notifier tokens — never print. docs/configuration.md
lists every setting.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PlainSerializer,
    PlainValidator,
    PositiveInt,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from candlewax.calendar import Calendar, Session, parse_hours, parse_weekdays
from candlewax.codec import INTERVALS
from candlewax.errors import ConfigError
from candlewax.logs import SECRETS
from candlewax.settings.alerts import RULES, AlertRules
from candlewax.settings.cluster import ClusterSettings, RecoverySettings
from candlewax.settings.gateway import GatewaySettings
from candlewax.settings.notify import NotifySettings
from candlewax.settings.types import (
    CommaList,
    KafkaProperties,
    Port,
    Secret,
    SecretFileError,
    is_secret_property,
    read_secret_file,
    reveal,
)
from candlewax.storage import DataPath, data_path

if TYPE_CHECKING:
    from candlewax.kafka import Connection
    from flows.activity import ActivityBars

__all__ = [
    "ENV_PREFIX",
    "RULES",
    "SETTINGS_ENV",
    "AlertRules",
    "ClusterSettings",
    "GatewaySettings",
    "NotifySettings",
    "RecoverySettings",
    "Secret",
    "Settings",
    "env_secret",
]

log = logging.getLogger(__name__)

ENV_PREFIX: Final = "CANDLEWAX_"
#: The whole settings of a parent process, as JSON, for the child it starts (the flow).
SETTINGS_ENV: Final = "CANDLEWAX_SETTINGS_JSON"
#: CANDLEWAX_* variables that are not settings.
_NOT_SETTINGS: Final = frozenset({"CONFIG", "LOG_LEVEL", "SETTINGS_JSON", "TEST_BROKERS"})
#: Variables Kubernetes makes for a Service named candlewax-* (service links).
_CHANNEL_TYPES: Final = frozenset({"telegram", "wecom", "webhook", "console"})
_SERVICE_LINK = re.compile(r".*_(SERVICE_HOST|SERVICE_PORT.*|PORT(_\d+_(TCP|UDP|SCTP).*)?)$")


EmptyMode = Literal["flat", "skip"]


class EmptyIntervalSettings(BaseModel):
    """``[candlewax.empty_intervals]``: what a window without trades becomes, ``"flat"`` (a bar
    at the previous close, volume 0, no ids: what Binance makes) or ``"skip"`` (no bar).
    ``symbols`` (``"venue:SYMBOL"``) override ``venues``, which override ``default``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: EmptyMode = "flat"
    venues: dict[str, EmptyMode] = Field(default_factory=dict)
    symbols: dict[str, EmptyMode] = Field(default_factory=dict)


class SessionSettings(BaseModel):
    """``[candlewax.sessions.NAME]``: a trading calendar (flows/calendar.py) — an IANA time
    zone, regular hours ``"09:30-16:00"``, optional ``pre`` / ``post`` hours, trading
    ``weekdays`` (``"mon-fri"``), ``holidays`` (local dates), and ``out_of_session``:
    ``"archive"`` (trades outside the regular hours make no bar) or ``"bars"`` (pre and post
    hours make bars too, and daily bars of their own)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    timezone: str
    regular: str
    pre: str | None = None
    post: str | None = None
    weekdays: str = "mon-fri"
    holidays: tuple[dt.date, ...] = ()
    out_of_session: Literal["archive", "bars"] = "archive"

    def session(self, name: str) -> Session:
        if self.timezone != "UTC" and "/" not in self.timezone:
            raise ValueError(f"session {name}: timezone must be an IANA name (America/New_York)")
        return Session(
            name,
            self.timezone,
            parse_hours(self.regular),
            None if self.pre is None else parse_hours(self.pre),
            None if self.post is None else parse_hours(self.post),
            parse_weekdays(self.weekdays),
            frozenset(self.holidays),
            self.out_of_session,
        )


def _intervals(values: tuple[str, ...]) -> tuple[str, ...]:
    unknown = [i for i in values if i not in INTERVALS]
    if unknown:
        raise ValueError(f"{unknown} unknown; choose from {', '.join(INTERVALS)}")
    if "1m" not in values:
        raise ValueError("must include 1m (the others are rolled up from it)")
    return tuple(sorted(set(values), key=INTERVALS.__getitem__))


DataDir = Annotated[DataPath, PlainValidator(data_path), PlainSerializer(str, return_type=str)]


class Settings(BaseSettings):
    """Everything a candlewax process needs to know. See docs/configuration.md."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        case_sensitive=False,
        frozen=True,
        extra="forbid",
        validate_default=True,
    )

    #: Kafka bootstrap servers; empty means "start the embedded broker" (demo) or an error.
    bootstrap_servers: str = ""
    #: Prefix of every topic name (``prod.`` → ``prod.trades``).
    topic_prefix: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{0,200}$")] = ""
    #: Partitions of ``trades`` (and ``bars``/``alerts``) when candlewax creates them.
    partitions: PositiveInt = 4
    replication_factor: PositiveInt = 1
    #: ``retention.ms`` of topics candlewax creates; -1 keeps everything (replays, tests).
    retention_ms: Annotated[int, Field(ge=-1)] | None = None
    #: Where Parquet goes: DATA_DIR/bars/..., DATA_DIR/trades/... — a local directory or an
    #: object store prefix (``s3://bucket/prefix``, ``gs://``, ``az://``; candlewax.storage).
    data_dir: DataDir = Path("data")
    #: Bar intervals; 1m is built from trades, the others are rollups of 1m bars.
    intervals: Annotated[CommaList, AfterValidator(_intervals)] = tuple(INTERVALS)
    #: Windows without trades: flat bars at the previous close (as Binance's klines) or none.
    empty_intervals: EmptyIntervalSettings = Field(default_factory=EmptyIntervalSettings)
    #: Where a ``1d`` bar starts for symbols without a session: ``"UTC"``, an offset such as
    #: ``"+08:00"`` (as Binance's timezone klines) or an IANA name (days of 23/25 h at DST).
    day_timezone: str = "UTC"
    #: Trading calendars by name, and which venues (``"finnhub"``) or symbols
    #: (``"finnhub:AAPL"``, which win) follow them (docs/architecture.md, "Sessions").
    sessions: dict[str, SessionSettings] = Field(default_factory=dict)
    session_of: dict[str, str] = Field(default_factory=dict)
    #: Bars by activity (flows/activity.py): ``"venue:SYMBOL"`` (or ``"*"``, every other symbol)
    #: → kinds such as ``["tick:1000", "volume:10", "value:1000000"]``.
    bar_kinds: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    #: How far behind the newest event time of its partition a trade may arrive and still count.
    lateness_ms: NonNegativeInt = 2_000
    #: Event-time plausibility (docs/reliability.md): a record's ts_ms may run at most this far
    #: ahead of its recv_ms ...
    max_clock_skew_ms: NonNegativeInt = 60_000
    #: ... and one more than this ahead of its partition's event time is held until records of
    #: time_jump_quorum distinct messages agree with it (or as many carry on at the old time).
    max_time_jump_ms: NonNegativeInt = 60_000
    time_jump_quorum: PositiveInt = 3
    #: Most Kafka messages one source poll hands to the flow as one batch.
    batch_max: PositiveInt = 10_000
    #: Consumer group of the flow (offsets are kept by Bytewax recovery, not the group).
    group_id: Annotated[str, Field(min_length=1)] = "candlewax-flow"
    #: Write the raw trade archive DATA_DIR/trades/... as well as bars.
    archive_trades: bool = True
    #: Finite input: at the end of every partition close all windows and exit.
    exit_when_done: bool = False
    metrics_host: str = "127.0.0.1"
    metrics_port: Port = 9464
    #: Per-symbol market gauges (close, range, volume, last alert) for at most this many
    #: symbols, the first seen; 0 turns them off.
    metric_symbols_max: NonNegativeInt = 50
    #: The flow's place in a Bytewax cluster (docs/deploy.md) and its recovery store.
    cluster: ClusterSettings = Field(default_factory=ClusterSettings)
    recovery: RecoverySettings = Field(default_factory=RecoverySettings)
    #: Volatility detector rules (docs/alerts.md).
    alerts: AlertRules = Field(default_factory=AlertRules)
    #: Notifier channels, routes and delivery (docs/alerts.md).
    notify: NotifySettings = Field(default_factory=NotifySettings)
    #: The market-data gateway, ``candlewax serve`` (docs/gateway.md).
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    #: Base URLs of the Telegram Bot API and the WeCom robot API (proxies, tests).
    telegram_api_url: Annotated[str, Field(pattern=r"^https?://")] = "https://api.telegram.org"
    wecom_api_url: Annotated[str, Field(pattern=r"^https?://")] = "https://qyapi.weixin.qq.com"
    #: Symbols for `candlewax connect` when --symbols is not given.
    symbols: CommaList = ()
    #: librdkafka properties (security.protocol, sasl.*, ssl.*...) for every Kafka client.
    kafka: KafkaProperties = Field(default_factory=dict)
    #: librdkafka properties whose values are read from files, e.g. a mounted Secret:
    #: ``{"sasl.password" = "/etc/candlewax/kafka/password"}``.
    kafka_secret_files: dict[str, Path] = Field(default_factory=dict)

    _file_properties: dict[str, str] = PrivateAttr(default_factory=dict)
    _calendar: Calendar = PrivateAttr(default_factory=Calendar)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(...) in code holds exactly what it is given; Settings.load reads the rest.
        return (init_settings,)

    @model_validator(mode="after")
    def _kafka_checked(self) -> Settings:
        files: dict[str, str] = {}
        for name, path in self.kafka_secret_files.items():
            try:
                files[name] = read_secret_file(path)
            except SecretFileError as exc:
                raise ValueError(f"kafka_secret_files: {name} from {path}: {exc}") from None
        self._file_properties = files
        from candlewax.kafka import check_properties

        check_properties(self.kafka_config())
        return self

    @model_validator(mode="after")
    def _calendar_checked(self) -> Settings:
        self._calendar = self.build_calendar()
        self.activity_bars()
        return self

    def activity_bars(self) -> ActivityBars:
        """A fresh activity-bar state of these settings (a ValueError names a bad kind)."""
        from flows.activity import ActivityBars, parse_kind

        listed = {k: [parse_kind(x) for x in v] for k, v in self.bar_kinds.items() if k != "*"}
        default = [parse_kind(x) for x in self.bar_kinds.get("*", ())]
        return ActivityBars(listed, default)

    def build_calendar(self) -> Calendar:
        """Day time zone and trading sessions, checked (a ValueError names what is wrong)."""
        sessions = {name: spec.session(name) for name, spec in self.sessions.items()}
        return Calendar(self.day_timezone, sessions, dict(self.session_of))

    @property
    def calendar(self) -> Calendar:
        return self._calendar

    # ------------------------------------------------------------------ use

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    @property
    def connection(self) -> Connection:
        """Bootstrap servers and properties for every Kafka client this process makes."""
        from candlewax.kafka import Connection

        return Connection(self.bootstrap_servers, self.kafka_config())

    def kafka_config(self) -> dict[str, str]:
        """The librdkafka properties of every client, secrets in clear (only for clients)."""
        props = {name: reveal(value) for name, value in self.kafka.items()}
        props.update(self._file_properties)
        return props

    def replace(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (None values ignored), validated like the original."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update({k: v for k, v in changes.items() if v is not None})
        return _validated(lambda: type(self)(**values), {"code": dict(changes)})

    # ------------------------------------------------------------------ hand-off

    def to_json(self) -> str:
        """Every field, secrets in clear: for the environment of a child process only."""
        return self.model_dump_json(context={"reveal_secrets": True})

    @classmethod
    def from_json(cls, text: str | bytes) -> Settings:
        return _validated(lambda: cls.model_validate_json(text), {"parent": {}})

    @classmethod
    def inherited(cls, env: Mapping[str, str] | None = None) -> Settings:
        """In a child process: the settings its parent handed down (``CANDLEWAX_SETTINGS_JSON``),
        else what the file in ``CANDLEWAX_CONFIG`` and the environment say (a process started
        by hand, e.g. ``python -m bytewax.run "flows.bars:build()"``)."""
        env = os.environ if env is None else env
        if env.get(SETTINGS_ENV):
            return cls.from_json(env[SETTINGS_ENV])
        return cls.load(env.get("CANDLEWAX_CONFIG") or None, env=env)

    # ------------------------------------------------------------------ load

    @classmethod
    def load(
        cls,
        path: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        defaults: Mapping[str, Any] | None = None,
        **flags: Any,
    ) -> Settings:
        """``defaults`` (a command's own, e.g. the demo's) < file (TOML, table ``[candlewax]``
        or top level) < environment < flags (None: unset; nested settings as dicts)."""
        env = os.environ if env is None else env
        sources: dict[str, dict[str, Any]] = {"default": dict(defaults or {})}
        if path is not None:
            sources[f"config file {path}"] = _read_toml(Path(path))
        sources["environment"] = _env_values(cls, env)
        sources["flag"] = {k: v for k, v in flags.items() if v is not None}
        merged: dict[str, Any] = {}
        for values in sources.values():
            merged = _deep_merge(merged, values)
        return _validated(lambda: cls(**merged), sources)


def env_secret(env: Mapping[str, str], name: str) -> str | None:
    """A secret from the environment: ``NAME``, else the file named by ``NAME_FILE`` (a mounted
    Kubernetes secret); None when neither is set. Registered for redaction at once."""
    value = env.get(name)
    if not value and env.get(f"{name}_FILE"):
        path = Path(env[f"{name}_FILE"])
        try:
            value = read_secret_file(path)
        except SecretFileError as exc:
            raise ConfigError(f"{name}_FILE={path} cannot be read: {exc}") from None
    value = value.strip() if value else None
    SECRETS.add(value)
    return value or None


# --------------------------------------------------------------------------- sources


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist: check --config") from None
    except IsADirectoryError:
        raise ConfigError(
            f"config file {path} is a directory: pass the TOML file with --config"
        ) from None
    except PermissionError:
        raise ConfigError(
            f"config file {path} cannot be read (permission denied): fix its permissions"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text: is it a TOML file?") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    table = doc.get("candlewax", doc)
    if not isinstance(table, dict):
        raise ConfigError(f"config file {path}: [candlewax] must be a table")
    return table


class _Environment(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping (tests, child processes)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._given = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {k.lower(): v for k, v in self._given.items()}


def _env_values(cls: type[Settings], env: Mapping[str, str]) -> dict[str, Any]:
    names = {n.upper() for n in cls.model_fields}
    for key in env:
        if not key.upper().startswith(ENV_PREFIX):
            continue
        rest = key.upper()[len(ENV_PREFIX) :]
        known = rest.split("__")[0] in names or rest in _NOT_SETTINGS
        if not known and not _SERVICE_LINK.fullmatch(rest):
            log.warning("ignoring %s: no such setting (docs/configuration.md)", key)
    try:
        return _Environment(cls, env)()
    except SettingsError as exc:
        field = re.search(r'field "(\w+)"', str(exc))
        name = f"{ENV_PREFIX}{field.group(1).upper()}" if field else "a CANDLEWAX_* variable"
        example = '{"security.protocol": "SSL"}' if name.endswith("KAFKA") else '{"name": value}'
        raise ConfigError(
            f"{name} is not valid JSON: write a JSON object, e.g. {name}='{example}' "
            "(docs/configuration.md)"
        ) from None


def _deep_merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- errors


def _validated(build: Any, sources: Mapping[str, Mapping[str, Any]]) -> Any:
    try:
        return build()
    except ValidationError as exc:
        raise ConfigError(_explain(exc, sources)) from None


def _where(field: str, sources: Mapping[str, Mapping[str, Any]]) -> str:
    for where in reversed(list(sources)):  # the source that won
        if field in sources[where] and where != "default":
            if where == "flag":
                return "a command-line flag"
            if where == "environment":
                return f"{ENV_PREFIX}{field.upper()}"
            if where == "parent":
                return f"{SETTINGS_ENV} (from the parent process)"
            return where
    return "default"


def _explain(exc: ValidationError, sources: Mapping[str, Mapping[str, Any]]) -> str:
    """One line: each problem with the setting's dotted name and where its value came from."""
    problems = []
    known = ", ".join(sorted(Settings.model_fields))
    for error in exc.errors(include_url=False)[:5]:
        loc = [str(p) for p in error["loc"] if not str(p).startswith(("function-", "json-"))]
        # notify.channels.<name>.<type tag>.<field>: the tag is pydantic's, not the user's
        loc = [p for i, p in enumerate(loc) if not (i >= 2 and loc[i - 2] == "channels" and p in _CHANNEL_TYPES)]  # fmt: skip
        # Keys come from the user's input: shown escaped, so the message stays one line.
        name = ".".join(p if p.isprintable() else repr(p) for p in loc) or "settings"
        where = _where(loc[0], sources) if loc else "settings"
        if error["type"] == "extra_forbidden":
            hint = f"; known: {known}" if len(loc) == 1 else ""
            problems.append(f"unknown setting {name!r} in {where}{hint}")
            continue
        message = str(error["msg"]).removeprefix("Value error, ")
        secret = any(is_secret_property(p) or p in ("token", "key", "url", "secret") for p in loc)
        shown = error.get("input")
        got = "" if secret or isinstance(shown, dict) else f" (got {str(shown)[:60]!r})"
        problems.append(f"setting {name} in {where}: {message}{got}")
    more = len(exc.errors()) - len(problems)
    return "invalid settings: " + "; ".join(problems) + (f"; and {more} more" if more > 0 else "")
