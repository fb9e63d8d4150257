"""The notifier's runtime configuration: its destinations, built from the checked
``notify`` settings (:class:`candlewax.settings.NotifySettings`) and their credentials.

A credential comes from the channel table, its mounted secret file (``token_file``/``key_file``/
``url_file``/``secret_file``), or the environment (``TELEGRAM_BOT_TOKEN``, ``TELEGRAM_CHAT_ID``,
``WECOM_WEBHOOK_KEY``, each also as ``..._FILE``). Without a ``channels`` table, the environment
alone defines them. Secrets never appear in reprs, logs or metrics labels. A gateway channel
(``type = "gateway"``) needs none: its alerts go to the ``user_events`` topic of the same Kafka.
See docs/alerts.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import SecretStr

from candlewax.codec import Alert
from candlewax.errors import ConfigError
from candlewax.logs import SECRETS
from candlewax.settings import Settings, env_secret
from candlewax.settings.notify import (
    Channel,
    ConsoleChannel,
    GatewayChannel,
    NotifySettings,
    Rate,
    Route,
    TelegramChannel,
    WebhookChannel,
    WeComChannel,
)
from candlewax.settings.types import SecretFileError, read_secret_file
from sinks.notify.channels import (
    Console,
    ConsoleSink,
    Destination,
    JsonWebhook,
    TelegramChat,
    WeComRobot,
)
from sinks.notify.gateway import GatewayUser
from sinks.notify.ratelimit import RateLimiter

#: The platforms' published limits (docs/alerts.md): Telegram ~1 msg/s per chat, 20/min in a group,
#: ~30/s per bot; a WeCom robot 20/min.
TELEGRAM_CHAT_RATES = (Rate(1, 1.0),)
TELEGRAM_GROUP_RATES = (Rate(1, 1.0), Rate(20, 60.0))
TELEGRAM_BOT_RATES = (Rate(30, 1.0),)
WECOM_RATES = (Rate(20, 60.0),)
WEBHOOK_RATES = (Rate(10, 1.0),)
#: A gateway user's stream is a Kafka topic: generous, a bound against a runaway route only.
GATEWAY_RATES = (Rate(50, 1.0),)

__all__ = ["NotifyConfig", "Route", "channels_from_env"]


@dataclass
class NotifyConfig:
    """The notify settings plus what they name: the destinations, credentials resolved."""

    destinations: list[Destination]
    settings: NotifySettings = field(default_factory=NotifySettings)
    #: The SQLite file of delivered alert ids (``notify.state_file`` or DATA_DIR/notify.sqlite3).
    state_file: Path = Path("data/notify.sqlite3")

    @property
    def routes(self) -> tuple[Route, ...]:
        return self.settings.routes

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
    def build(
        cls,
        settings: Settings,
        env: Mapping[str, str],
        console: ConsoleSink | None = None,
    ) -> NotifyConfig:
        """The destinations of ``settings.notify``; credentials a channel lacks from ``env``."""
        notify = settings.notify
        channels = notify.channels
        if channels is None:
            channels = channels_from_env(env)
            missing = sorted({c for r in notify.routes for c in r.channels} - set(channels))
            if missing:
                raise ConfigError(
                    f"invalid settings: notify.routes name channels {missing} but no channels "
                    f"table is set; the environment defines: {sorted(channels) or 'none'}"
                )
        bots: dict[str, RateLimiter] = {}
        destinations: list[Destination] = []
        for name, spec in channels.items():
            destinations += _build(name, spec, notify, settings, env, bots, console)
        state_file = notify.state_file
        if state_file is None:
            if not isinstance(settings.data_dir, Path):
                raise ConfigError(
                    f"invalid settings: notify.state_file: the data dir {settings.data_dir} is an "
                    "object store; the notifier's SQLite state needs a local file (--state-file)"
                )
            state_file = settings.data_dir / "notify.sqlite3"
        return cls(destinations=destinations, settings=notify, state_file=state_file)


def channels_from_env(env: Mapping[str, str]) -> dict[str, Channel]:
    """The channels the environment alone defines (no ``[candlewax.notify.channels]`` table)."""
    out: dict[str, Channel] = {}
    if (env.get("TELEGRAM_BOT_TOKEN") or env.get("TELEGRAM_BOT_TOKEN_FILE")) and env.get(
        "TELEGRAM_CHAT_ID"
    ):
        out["telegram"] = TelegramChannel(type="telegram")
    if env.get("WECOM_WEBHOOK_KEY") or env.get("WECOM_WEBHOOK_KEY_FILE"):
        out["wecom"] = WeComChannel(type="wecom", language="zh")
    return out


def _secret(
    where: str,
    key: str,
    value: SecretStr | None,
    file: Path | None,
    env: Mapping[str, str],
    env_name: str | None,
) -> str:
    """From the table, else ``<key>_file``, else env ``ENV``, else env ``ENV_FILE``; '' if none."""
    if value is not None and value.get_secret_value().strip():
        text = value.get_secret_value().strip()
    elif file is not None:
        try:
            text = read_secret_file(file)
        except SecretFileError as exc:
            raise ConfigError(f"{where}: cannot read the {key} file {file}: {exc}") from None
    else:
        text = (env_secret(env, env_name) if env_name else None) or ""
    SECRETS.add(text)  # masked in every log line of this process from now on
    return text


def _build(
    name: str,
    spec: Channel,
    notify: NotifySettings,
    settings: Settings,
    env: Mapping[str, str],
    bots: dict[str, RateLimiter],
    console: ConsoleSink | None,
) -> list[Destination]:
    where = f"notify.channels.{name}"
    language = spec.language or notify.language
    if isinstance(spec, TelegramChannel):
        token = _secret(where, "token", spec.token, spec.token_file, env, "TELEGRAM_BOT_TOKEN")
        if not token:
            raise ConfigError(
                f"{where}: no bot token; set TELEGRAM_BOT_TOKEN (or TELEGRAM_BOT_TOKEN_FILE), or "
                "token_file in the channel table (ask @BotFather for a token)"
            )
        chats = list(spec.chat_ids) or [
            c.strip() for c in env.get("TELEGRAM_CHAT_ID", "").split(",") if c.strip()
        ]
        if not chats:
            raise ConfigError(
                f"{where}: no chat id; set TELEGRAM_CHAT_ID or chat_ids (docs/alerts.md: how to "
                "find a chat id)"
            )
        bot = bots.setdefault(token, RateLimiter(spec.bot_rate or TELEGRAM_BOT_RATES))
        out: list[Destination] = []
        for chat in chats:
            # Group and channel chats have negative ids; they get the 20/min group limit too.
            default = TELEGRAM_GROUP_RATES if chat.startswith("-") else TELEGRAM_CHAT_RATES
            limiter = RateLimiter(spec.rate if spec.rate is not None else default)
            out.append(
                TelegramChat(
                    name,
                    settings.telegram_api_url,
                    token,
                    chat,
                    spec.parse_mode,
                    limiter,
                    bot,
                    language,
                )
            )
        return out
    if isinstance(spec, WeComChannel):
        key = _secret(where, "key", spec.key, spec.key_file, env, "WECOM_WEBHOOK_KEY")
        if not key:
            raise ConfigError(
                f"{where}: no robot key; set WECOM_WEBHOOK_KEY (or WECOM_WEBHOOK_KEY_FILE), or "
                "key_file in the channel table (the key=... part of the robot's webhook URL)"
            )
        return [
            WeComRobot(
                name,
                settings.wecom_api_url,
                key,
                spec.format,
                list(spec.mentioned_list),
                list(spec.mentioned_mobile_list),
                RateLimiter(spec.rate if spec.rate is not None else WECOM_RATES),
                language,
            )
        ]
    if isinstance(spec, WebhookChannel):
        url = _secret(where, "url", spec.url, spec.url_file, env, None)
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: url (or url_file) must be an http(s) URL")
        secret = _secret(where, "secret", spec.secret, spec.secret_file, env, None) or None
        return [
            JsonWebhook(
                name,
                url,
                secret,
                {k: v.get_secret_value() for k, v in spec.headers.items()},
                RateLimiter(spec.rate if spec.rate is not None else WEBHOOK_RATES),
            )
        ]
    if isinstance(spec, GatewayChannel):
        limiter = RateLimiter(spec.rate if spec.rate is not None else GATEWAY_RATES)
        return [GatewayUser(name, spec.user, limiter)]
    assert isinstance(spec, ConsoleChannel)
    return [Console(name, RateLimiter(spec.rate or ()), language, console)]
