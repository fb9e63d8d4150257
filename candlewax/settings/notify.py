"""The notifier's settings: channels, routes and delivery (docs/alerts.md), as the
``[candlewax.notify]`` TOML table or JSON in ``CANDLEWAX_NOTIFY``.

This is the shape, checked once when the settings load. Credentials a channel does not carry
(``TELEGRAM_BOT_TOKEN``, ``WECOM_WEBHOOK_KEY``, each also as ``..._FILE``) are read from the
environment when the notifier builds its destinations (``sinks/notify/config.py``); without a
``channels`` table the environment alone defines them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PositiveFloat,
    PositiveInt,
    model_validator,
)

from candlewax.codec import INTERVALS, SEVERITIES, USER_PATTERN, Alert, user_id
from candlewax.errors import ConfigError, ParseError
from candlewax.settings.alerts import RULES
from candlewax.settings.types import CommaList, Secret, _comma_list

#: Languages of the alert templates.
LANGUAGES: Final = ("en", "zh")
Language = Literal["en", "zh"]

_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass(frozen=True, slots=True)
class Rate:
    """At most ``count`` sends in any ``window_s`` seconds."""

    count: int
    window_s: float

    @classmethod
    def parse(cls, text: str, where: str = "rate") -> Rate:
        """``"20/60s"``, ``"1/1s"``, ``"1/500ms"``; ``"30/s"`` is refused: the window needs a
        number."""
        m = _RATE_RE.match(text) if isinstance(text, str) else None
        if not m or int(m.group(1)) < 1 or float(m.group(2)) <= 0:
            raise ConfigError(f"{where}: {text!r} is not a rate like '20/60s' or '1/1s'")
        return cls(int(m.group(1)), float(m.group(2)) * _UNIT_S[m.group(3) or "s"])

    def __str__(self) -> str:
        return f"{self.count}/{self.window_s:g}s"


def _rates(value: Any) -> Any:
    items = _comma_list(value)
    if not isinstance(items, list | tuple):
        return value
    try:
        return tuple(r if isinstance(r, Rate) else Rate.parse(r) for r in items)
    except ConfigError as exc:
        raise ValueError(str(exc).removeprefix("rate: ")) from None


#: ``["1/1s", "20/60s"]`` (or ``"1/1s,20/60s"``): every limit holds.
Rates = Annotated[
    tuple[Rate, ...],
    BeforeValidator(_rates),
    PlainSerializer(lambda rates: [str(r) for r in rates], when_used="json"),
]


class _Channel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Template language; the notify table's ``language`` when not given.
    language: Language | None = None
    #: Rate limits of this destination; the platform's published limits when not given.
    rate: Rates | None = None


class TelegramChannel(_Channel):
    type: Literal["telegram"]
    token: Secret | None = None
    token_file: Path | None = None
    chat_ids: CommaList = Field(default=(), validation_alias=AliasChoices("chat_ids", "chat_id"))
    parse_mode: Literal["HTML", "MarkdownV2", ""] = "HTML"
    #: The bot's own limit, shared by all its chats.
    bot_rate: Rates | None = None


class WeComChannel(_Channel):
    type: Literal["wecom"]
    key: Secret | None = None
    key_file: Path | None = None
    format: Literal["markdown", "text"] = "markdown"
    mentioned_list: CommaList = ()
    mentioned_mobile_list: CommaList = ()


class WebhookChannel(_Channel):
    type: Literal["webhook"]
    url: Secret | None = None
    url_file: Path | None = None
    secret: Secret | None = None
    secret_file: Path | None = None
    headers: dict[str, Secret] = Field(default_factory=dict)


class ConsoleChannel(_Channel):
    type: Literal["console"]


def _user(value: str) -> str:
    try:
        return user_id(value)
    except ParseError:
        raise ValueError(
            f"not a gateway user id ({USER_PATTERN}: the key id of an API key)"
        ) from None


class GatewayChannel(_Channel):
    """The private ``user`` stream of one gateway user (``candlewax serve``): alerts go to the
    ``user_events`` topic, keyed by the user."""

    type: Literal["gateway"]
    user: Annotated[str, AfterValidator(_user)]


Channel = Annotated[
    TelegramChannel | WeComChannel | WebhookChannel | ConsoleChannel | GatewayChannel,
    Field(discriminator="type"),
]


def _upper(values: Any) -> Any:
    values = _comma_list(values)
    if isinstance(values, list | tuple):
        return [v.upper() if isinstance(v, str) else v for v in values]
    return values


Rule = Literal["range", "move", "zscore"]
Interval = Literal["1m", "5m", "15m", "30m", "1h", "1d"]
assert set(Rule.__args__) == set(RULES) and set(Interval.__args__) == set(INTERVALS)  # type: ignore[attr-defined]


class Route(BaseModel):
    """Alerts matching every given filter go to ``channels`` (an empty filter matches all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channels: Annotated[CommaList, Field(min_length=1)]
    rules: Annotated[tuple[Rule, ...], BeforeValidator(_comma_list)] = ()
    symbols: Annotated[tuple[str, ...], BeforeValidator(_upper)] = ()
    venues: CommaList = ()
    intervals: Annotated[tuple[Interval, ...], BeforeValidator(_comma_list)] = ()
    min_severity: Literal["warning", "critical"] = "warning"

    def matches(self, alert: Alert) -> bool:
        return (
            (not self.rules or alert.rule in self.rules)
            and (not self.symbols or alert.symbol in self.symbols)
            and (not self.venues or alert.venue in self.venues)
            and (not self.intervals or alert.interval in self.intervals)
            and SEVERITIES.index(alert.severity) >= SEVERITIES.index(self.min_severity)
        )


class NotifySettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Named channels; None: the ones the environment defines (TELEGRAM_*, WECOM_*).
    channels: dict[str, Channel] | None = None
    routes: tuple[Route, ...] = ()
    group_id: str = Field(default="candlewax-notify", min_length=1)
    #: SQLite of delivered alert ids; default DATA_DIR/notify.sqlite3.
    state_file: Path | None = None
    keep_days: PositiveFloat = 30.0
    language: Language = "en"
    #: Longest an alert should wait behind others for a destination's rate limit: beyond it the
    #: queue is merged into one digest message.
    max_delay_s: PositiveFloat = 10.0
    #: How long 5xx answers and timeouts are retried (capped jittered backoff) before
    #: dead-letter.
    max_retry_s: PositiveFloat = 600.0
    timeout_s: PositiveFloat = 10.0
    #: Alerts held in memory before consumption pauses (a destination is down for long).
    max_pending: PositiveInt = 100_000
    #: Where a new consumer group starts: only new alerts, or the oldest one kept.
    start: Literal["latest", "earliest"] = "latest"

    @model_validator(mode="after")
    def _routes_name_channels(self) -> NotifySettings:
        if self.channels is not None:
            for i, route in enumerate(self.routes):
                missing = [c for c in route.channels if c not in self.channels]
                if missing:
                    raise ValueError(
                        f"routes[{i}] names no channel {missing}; configured: "
                        f"{sorted(self.channels) or 'none'}"
                    )
        return self
