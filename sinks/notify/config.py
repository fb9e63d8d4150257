"""The notifier's configuration: channels, routes and delivery knobs, with their credentials.

Read from the ``[candlewax.notify]`` TOML table (or JSON in ``CANDLEWAX_NOTIFY``); credentials
come from the channel table, a mounted secret file (``token_file``/``key_file``/``secret_file``),
or the environment (``TELEGRAM_BOT_TOKEN``, ``TELEGRAM_CHAT_ID``, ``WECOM_WEBHOOK_KEY``, each also
as ``..._FILE``). Without a ``channels`` table, the environment alone defines them. Unknown keys
are errors; secrets never appear in reprs, logs or metrics labels. See docs/alerts.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from candlewax.codec import INTERVALS, SEVERITIES, Alert
from candlewax.errors import ConfigError
from candlewax.logs import SECRETS
from candlewax.settings import env_secret
from sinks.notify.channels import (
    Console,
    ConsoleSink,
    Destination,
    JsonWebhook,
    TelegramChat,
    WeComRobot,
)
from sinks.notify.ratelimit import Rate, RateLimiter
from sinks.notify.text import LANGUAGES

TELEGRAM_API_URL = "https://api.telegram.org"
WECOM_API_URL = "https://qyapi.weixin.qq.com"

#: The platforms' published limits (docs/alerts.md): Telegram ~1 msg/s per chat, 20/min in a group,
#: ~30/s per bot; a WeCom robot 20/min.
TELEGRAM_CHAT_RATES = ("1/1s",)
TELEGRAM_GROUP_RATES = ("1/1s", "20/60s")
TELEGRAM_BOT_RATES = ("30/1s",)
WECOM_RATES = ("20/60s",)
WEBHOOK_RATES = ("10/1s",)

RULES = ("range", "move", "zscore")

_TOP = {
    "channels",
    "routes",
    "group_id",
    "state_file",
    "keep_days",
    "language",
    "max_delay_s",
    "max_retry_s",
    "timeout_s",
    "max_pending",
    "start",
}
_CHANNEL = {
    "telegram": {
        "type",
        "language",
        "rate",
        "token",
        "token_file",
        "chat_ids",
        "chat_id",
        "parse_mode",
        "bot_rate",
    },
    "wecom": {
        "type",
        "language",
        "rate",
        "key",
        "key_file",
        "format",
        "mentioned_list",
        "mentioned_mobile_list",
    },
    "webhook": {"type", "language", "rate", "url", "url_file", "secret", "secret_file", "headers"},
    "console": {"type", "language", "rate"},
}
_ROUTE = {"channels", "rules", "symbols", "venues", "intervals", "min_severity"}


@dataclass(frozen=True)
class Route:
    """Alerts matching every given filter go to ``channels`` (an empty filter matches all)."""

    channels: tuple[str, ...]
    rules: frozenset[str] = frozenset()
    symbols: frozenset[str] = frozenset()
    venues: frozenset[str] = frozenset()
    intervals: frozenset[str] = frozenset()
    min_severity: str = "warning"

    def matches(self, alert: Alert) -> bool:
        return (
            (not self.rules or alert.rule in self.rules)
            and (not self.symbols or alert.symbol in self.symbols)
            and (not self.venues or alert.venue in self.venues)
            and (not self.intervals or alert.interval in self.intervals)
            and SEVERITIES.index(alert.severity) >= SEVERITIES.index(self.min_severity)
        )


@dataclass
class NotifyConfig:
    destinations: list[Destination]
    routes: list[Route]
    group_id: str = "candlewax-notify"
    state_file: Path = Path("data/notify.sqlite3")
    keep_days: float = 30.0
    #: Longest an alert should wait behind others for a destination's rate limit: beyond it the
    #: queue is merged into one digest message.
    max_delay_s: float = 10.0
    #: How long 5xx answers and timeouts are retried (capped jittered backoff) before dead-letter.
    max_retry_s: float = 600.0
    timeout_s: float = 10.0
    #: Alerts held in memory before consumption pauses (a destination is down for long).
    max_pending: int = 100_000
    #: Where a new consumer group starts: "latest" (only new alerts) or "earliest".
    start: str = "latest"
    secrets: tuple[str, ...] = field(default=(), repr=False)

    def route(self, alert: Alert) -> list[Destination]:
        """The destinations of an alert: the union over all matching routes, in config order."""
        if not self.routes:
            return list(self.destinations)
        wanted = {c for r in self.routes if r.matches(alert) for c in r.channels}
        return [d for d in self.destinations if d.channel in wanted]

    def describe(self) -> list[str]:
        """One line per destination, safe to print."""
        out = []
        for d in self.destinations:
            rates = ", ".join(str(r) for r in d.limiter.rates) or "unlimited"
            out.append(f"{d.kind} {d.key} ({d.language}, {rates})")
        return out

    @classmethod
    def parse(
        cls,
        raw: Mapping[str, Any],
        env: Mapping[str, str],
        *,
        telegram_api_url: str = TELEGRAM_API_URL,
        wecom_api_url: str = WECOM_API_URL,
        data_dir: Path = Path("data"),
        console: ConsoleSink | None = None,
    ) -> NotifyConfig:
        unknown = set(raw) - _TOP
        if unknown:
            raise ConfigError(
                f"notify: unknown key(s) {sorted(unknown)}; known: {', '.join(sorted(_TOP))}"
            )
        language = _choice(raw.get("language", "en"), LANGUAGES, "notify.language")
        secrets: list[str] = []
        bots: dict[str, RateLimiter] = {}
        channels = raw.get("channels")
        if channels is None:
            channels = channels_from_env(env)
        if not isinstance(channels, Mapping):
            raise ConfigError("notify.channels must be a table of named channels")
        destinations: list[Destination] = []
        for name, spec in channels.items():
            if not isinstance(spec, Mapping):
                raise ConfigError(f"notify.channels.{name} must be a table")
            destinations += _build(
                str(name),
                spec,
                env,
                language,
                telegram_api_url,
                wecom_api_url,
                secrets,
                bots,
                console,
            )
        names = {d.channel for d in destinations}
        routes = [_route(r, i, names) for i, r in enumerate(raw.get("routes", []))]
        SECRETS.add(*secrets)  # masked in every log line of this process from now on
        try:
            return cls(
                destinations=destinations,
                routes=routes,
                group_id=str(raw.get("group_id", "candlewax-notify")),
                state_file=Path(raw.get("state_file", data_dir / "notify.sqlite3")),
                keep_days=_positive(raw.get("keep_days", 30.0), "notify.keep_days"),
                max_delay_s=_positive(raw.get("max_delay_s", 10.0), "notify.max_delay_s"),
                max_retry_s=_positive(raw.get("max_retry_s", 600.0), "notify.max_retry_s"),
                timeout_s=_positive(raw.get("timeout_s", 10.0), "notify.timeout_s"),
                max_pending=int(_positive(raw.get("max_pending", 100_000), "notify.max_pending")),
                start=_choice(raw.get("start", "latest"), ("latest", "earliest"), "notify.start"),
                secrets=tuple(s for s in secrets if s),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"notify: {exc}") from None


def channels_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The channels the environment alone defines (no ``[candlewax.notify.channels]`` table)."""
    out: dict[str, Any] = {}
    if (env.get("TELEGRAM_BOT_TOKEN") or env.get("TELEGRAM_BOT_TOKEN_FILE")) and env.get(
        "TELEGRAM_CHAT_ID"
    ):
        out["telegram"] = {"type": "telegram"}
    if env.get("WECOM_WEBHOOK_KEY") or env.get("WECOM_WEBHOOK_KEY_FILE"):
        out["wecom"] = {"type": "wecom", "language": "zh"}
    return out


def _choice(value: Any, choices: Sequence[str], where: str) -> str:
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")
    return str(value)


def _positive(value: Any, where: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: {value!r} is not a number") from None
    if number <= 0:
        raise ConfigError(f"{where}: {value!r} must be > 0")
    return number


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, Sequence) and all(isinstance(v, str | int) for v in value):
        return [str(v) for v in value]
    raise ConfigError(f"{where}: expected a list of strings, got {value!r}")


def _secret(
    spec: Mapping[str, Any], name: str, key: str, env: Mapping[str, str], env_name: str | None
) -> str:
    """From the table, else ``<key>_file``, else env ``ENV``, else env ``ENV_FILE``; '' if none."""
    if spec.get(key):
        return str(spec[key]).strip()
    file = spec.get(f"{key}_file")
    if not file:
        return (env_secret(env, env_name) if env_name else None) or ""
    try:
        return Path(file).read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"notify.channels.{name}: cannot read the {key} file {file}: {exc.strerror}"
        ) from None


def _rates(spec: Mapping[str, Any], key: str, default: Sequence[str], where: str) -> list[Rate]:
    return [Rate.parse(r, f"{where}.{key}") for r in _strings(spec.get(key, list(default)), where)]


def _build(
    name: str,
    spec: Mapping[str, Any],
    env: Mapping[str, str],
    default_language: str,
    telegram_api_url: str,
    wecom_api_url: str,
    secrets: list[str],
    bots: dict[str, RateLimiter],
    console: ConsoleSink | None,
) -> list[Destination]:
    where = f"notify.channels.{name}"
    kind = _choice(spec.get("type"), tuple(_CHANNEL), f"{where}.type")
    unknown = set(spec) - _CHANNEL[kind]
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)} for a {kind} channel; "
            f"known: {', '.join(sorted(_CHANNEL[kind]))}"
        )
    language = _choice(spec.get("language", default_language), LANGUAGES, f"{where}.language")
    if kind == "telegram":
        token = _secret(spec, name, "token", env, "TELEGRAM_BOT_TOKEN")
        if not token:
            raise ConfigError(
                f"{where}: no bot token; set TELEGRAM_BOT_TOKEN (or TELEGRAM_BOT_TOKEN_FILE), or "
                "token_file in the channel table (ask @BotFather for a token)"
            )
        secrets.append(token)
        chats = _strings(spec.get("chat_ids", spec.get("chat_id")), f"{where}.chat_ids") or (
            _strings(env.get("TELEGRAM_CHAT_ID"), "TELEGRAM_CHAT_ID")
        )
        if not chats:
            raise ConfigError(
                f"{where}: no chat id; set TELEGRAM_CHAT_ID or chat_ids (docs/alerts.md: how to "
                "find a chat id)"
            )
        parse_mode = _choice(
            spec.get("parse_mode", "HTML"), ("HTML", "MarkdownV2", ""), f"{where}.parse_mode"
        )
        bot = bots.setdefault(
            token, RateLimiter(_rates(spec, "bot_rate", TELEGRAM_BOT_RATES, where))
        )
        out: list[Destination] = []
        for chat in chats:
            # Group and channel chats have negative ids; they get the 20/min group limit too.
            default = TELEGRAM_GROUP_RATES if chat.startswith("-") else TELEGRAM_CHAT_RATES
            limiter = RateLimiter(_rates(spec, "rate", default, where))
            out.append(
                TelegramChat(
                    name, telegram_api_url, token, chat, parse_mode, limiter, bot, language
                )
            )
        return out
    if kind == "wecom":
        key = _secret(spec, name, "key", env, "WECOM_WEBHOOK_KEY")
        if not key:
            raise ConfigError(
                f"{where}: no robot key; set WECOM_WEBHOOK_KEY (or WECOM_WEBHOOK_KEY_FILE), or "
                "key_file in the channel table (the key=... part of the robot's webhook URL)"
            )
        secrets.append(key)
        return [
            WeComRobot(
                name,
                wecom_api_url,
                key,
                _choice(spec.get("format", "markdown"), ("markdown", "text"), f"{where}.format"),
                _strings(spec.get("mentioned_list"), f"{where}.mentioned_list"),
                _strings(spec.get("mentioned_mobile_list"), f"{where}.mentioned_mobile_list"),
                RateLimiter(_rates(spec, "rate", WECOM_RATES, where)),
                language,
            )
        ]
    if kind == "webhook":
        url = _secret(spec, name, "url", env, None)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url (or url_file) must be an http(s) URL")
        secret = _secret(spec, name, "secret", env, None) or None
        secrets += [url, secret or ""]
        headers = spec.get("headers", {})
        if not isinstance(headers, Mapping):
            raise ConfigError(f"{where}.headers must be a table of strings")
        return [
            JsonWebhook(
                name,
                url,
                secret,
                {str(k): str(v) for k, v in headers.items()},
                RateLimiter(_rates(spec, "rate", WEBHOOK_RATES, where)),
            )
        ]
    return [Console(name, RateLimiter(_rates(spec, "rate", (), where)), language, console)]


def _route(raw: Any, index: int, channels: set[str]) -> Route:
    where = f"notify.routes[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a table")
    unknown = set(raw) - _ROUTE
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_ROUTE)}")
    targets = _strings(raw.get("channels"), f"{where}.channels")
    if not targets:
        raise ConfigError(f"{where}: channels is required")
    missing = [c for c in targets if c not in channels]
    if missing:
        raise ConfigError(
            f"{where}: no channel named {missing}; configured: {sorted(channels) or 'none'}"
        )
    rules = _strings(raw.get("rules"), f"{where}.rules")
    bad = [r for r in rules if r not in RULES]
    intervals = _strings(raw.get("intervals"), f"{where}.intervals")
    bad += [i for i in intervals if i not in INTERVALS]
    if bad:
        raise ConfigError(f"{where}: unknown rule(s)/interval(s) {bad}")
    return Route(
        channels=tuple(targets),
        rules=frozenset(rules),
        symbols=frozenset(s.upper() for s in _strings(raw.get("symbols"), f"{where}.symbols")),
        venues=frozenset(_strings(raw.get("venues"), f"{where}.venues")),
        intervals=frozenset(intervals),
        min_severity=_choice(
            raw.get("min_severity", "warning"), SEVERITIES, f"{where}.min_severity"
        ),
    )
