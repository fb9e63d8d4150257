"""Destinations: one Telegram chat, one WeCom group robot, one JSON webhook, or the console.

Each destination renders alerts into request bodies and classifies the platform's answer into a
:class:`Result` — the notifier decides what to do with it (send the next, wait, back off, or
dead-letter). Nothing here logs, and no :class:`Result` detail ever contains a URL: bot tokens and
robot keys live in the URLs.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

from candlewax.codec import Alert
from sinks.notify import text
from sinks.notify.ratelimit import RateLimiter

OK = "ok"
RATE_LIMITED = "rate_limited"
RETRY = "retry"
REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Result:
    """How a platform answered one request."""

    outcome: str  # ok | rate_limited | retry | rejected
    detail: str = ""
    #: rate_limited: seconds the platform asked us to wait (None: not said).
    retry_after_s: float | None = None
    #: rejected: a short bounded label for metrics and dead letters (http_400, errcode_93000...).
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Payload:
    """One request body; ``plain`` is the same message without markup (Telegram fallback)."""

    body: dict[str, Any]
    plain: str | None = None
    #: For a fallback: what changed, for the log line.
    note: str = ""


class Destination(ABC):
    """Where alerts go. ``key`` names it in the delivered-ids store and in dead letters: it must be
    stable across restarts and must not contain a secret."""

    kind: str = ""

    def __init__(
        self,
        channel: str,
        key: str,
        limiter: RateLimiter,
        shared: RateLimiter | None = None,
        language: str = "en",
    ) -> None:
        self.channel = channel
        self.key = key
        self.limiter = limiter
        self.shared = shared
        self.language = language

    @abstractmethod
    def payloads(self, alerts: Sequence[Alert]) -> list[Payload]:
        """Request bodies for one alert (len 1) or a digest of several, sent in order."""

    @abstractmethod
    def post(self, client: httpx.Client, payload: Payload) -> Result:
        """Send one request; never raises for network or platform errors."""

    def fallback(self, payload: Payload, result: Result) -> Payload | None:
        """A safer form of a rejected payload to try once, or None."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.key})"


def _transport_error(exc: Exception) -> Result:
    # str(exc) of httpx errors can carry the request URL: only the class name goes out.
    return Result(RETRY, f"{type(exc).__name__} (no answer)")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        obj = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {}
    return obj if isinstance(obj, dict) else {}


# --------------------------------------------------------------------------- Telegram


class TelegramChat(Destination):
    """``sendMessage`` to one chat. 429 carries ``parameters.retry_after``; 400/403 are final,
    except "can't parse entities", which is retried once as plain text: an alert is worth more
    than its formatting."""

    kind = "telegram"

    def __init__(
        self,
        channel: str,
        api_url: str,
        token: str,
        chat_id: str,
        parse_mode: str,
        limiter: RateLimiter,
        shared: RateLimiter | None,
        language: str,
    ) -> None:
        super().__init__(channel, f"{channel}:{chat_id}", limiter, shared, language)
        self._url = f"{api_url.rstrip('/')}/bot{token}/sendMessage"
        self.chat_id = chat_id
        self.parse_mode = parse_mode
        self.markup = {
            "HTML": text.TELEGRAM_HTML,
            "MarkdownV2": text.TELEGRAM_MARKDOWNV2,
        }.get(parse_mode, text.TELEGRAM_PLAIN)

    def payloads(self, alerts: Sequence[Alert]) -> list[Payload]:
        marked = text.render(alerts, self.markup, self.language)
        plain = text.render(alerts, text.TELEGRAM_PLAIN, self.language)
        out = []
        for i, message in enumerate(marked):
            body: dict[str, Any] = {
                "chat_id": self.chat_id,
                "text": message,
                "disable_web_page_preview": True,
            }
            if self.markup is not text.TELEGRAM_PLAIN:
                body["parse_mode"] = self.parse_mode
            out.append(Payload(body, plain[i] if len(plain) == len(marked) else None))
        return out

    def post(self, client: httpx.Client, payload: Payload) -> Result:
        try:
            response = client.post(self._url, json=payload.body)
        except httpx.HTTPError as exc:
            return _transport_error(exc)
        obj = _json(response)
        description = str(obj.get("description", ""))[:200]
        if response.status_code == 200 and obj.get("ok") is True:
            return Result(OK)
        if response.status_code == 429:
            params = obj.get("parameters") or {}
            retry_after = params.get("retry_after") if isinstance(params, dict) else None
            wait = float(retry_after) if isinstance(retry_after, int | float) else None
            return Result(RATE_LIMITED, description or "429", retry_after_s=wait)
        if response.status_code >= 500 or response.status_code == 200:
            return Result(RETRY, f"HTTP {response.status_code} {description}".strip())
        params = obj.get("parameters")
        migrated = params.get("migrate_to_chat_id") if isinstance(params, dict) else None
        if response.status_code == 400 and isinstance(migrated, int):
            # The group became a supergroup with a new id: follow it (and say so in the log).
            self.chat_id = str(migrated)
            description = f"{description} (group migrated to chat {migrated})"
        return Result(
            REJECTED,
            f"HTTP {response.status_code} {description}".strip(),
            reason=f"http_{response.status_code}",
        )

    def fallback(self, payload: Payload, result: Result) -> Payload | None:
        if result.reason == "http_400" and payload.body["chat_id"] != self.chat_id:
            note = f"sending it to the migrated chat {self.chat_id} (update chat_ids)"
            return Payload({**payload.body, "chat_id": self.chat_id}, payload.plain, note)
        if (
            result.reason == "http_400"
            and "parse" in result.detail.lower()
            and "parse_mode" in payload.body
            and payload.plain is not None
        ):
            body = {k: v for k, v in payload.body.items() if k != "parse_mode"}
            return Payload({**body, "text": payload.plain}, note="sending it as plain text")
        return None


# --------------------------------------------------------------------------- WeCom


#: WeCom robot errcodes that mean "try again later" rather than "this will never work".
WECOM_RETRY = frozenset({-1, 45033})
WECOM_RATE_LIMITED = 45009
WECOM_INVALID_KEY = 93000


class WeComRobot(Destination):
    """A WeCom (企业微信) group robot: ``/cgi-bin/webhook/send?key=KEY``. Errors come with HTTP 200
    and a non-zero ``errcode``: 45009 = rate limited (wait a window), 93000 = invalid key."""

    kind = "wecom"

    def __init__(
        self,
        channel: str,
        api_url: str,
        key: str,
        msgtype: str,
        mentioned_list: Sequence[str],
        mentioned_mobile_list: Sequence[str],
        limiter: RateLimiter,
        language: str,
    ) -> None:
        super().__init__(channel, channel, limiter, None, language)
        self._url = f"{api_url.rstrip('/')}/cgi-bin/webhook/send"
        self._key = key
        self.msgtype = msgtype
        self.mentioned_list = list(mentioned_list)
        self.mentioned_mobile_list = list(mentioned_mobile_list)
        self.markup = text.WECOM_MARKDOWN if msgtype == "markdown" else text.WECOM_TEXT

    def payloads(self, alerts: Sequence[Alert]) -> list[Payload]:
        if self.msgtype == "markdown":
            mentions = "".join(f"<@{m}>" for m in self.mentioned_list)
            room = text.utf8_len("\n" + mentions) if mentions else 0
            limit = self.markup.limit - room
            messages = text.render(alerts, self.markup, self.language, limit)
            return [
                Payload(
                    {
                        "msgtype": "markdown",
                        "markdown": {"content": m + ("\n" + mentions if mentions else "")},
                    }
                )
                for m in messages
            ]
        body: dict[str, Any] = {}
        if self.mentioned_list:
            body["mentioned_list"] = self.mentioned_list
        if self.mentioned_mobile_list:
            body["mentioned_mobile_list"] = self.mentioned_mobile_list
        return [
            Payload({"msgtype": "text", "text": {"content": m, **body}})
            for m in text.render(alerts, self.markup, self.language)
        ]

    def post(self, client: httpx.Client, payload: Payload) -> Result:
        try:
            response = client.post(self._url, params={"key": self._key}, json=payload.body)
        except httpx.HTTPError as exc:
            return _transport_error(exc)
        if response.status_code != 200:
            if response.status_code >= 500 or response.status_code == 429:
                return Result(RETRY, f"HTTP {response.status_code}")
            return Result(
                REJECTED, f"HTTP {response.status_code}", reason=f"http_{response.status_code}"
            )
        obj = _json(response)
        errcode = obj.get("errcode")
        errmsg = str(obj.get("errmsg", ""))[:200]
        if errcode == 0:
            return Result(OK)
        if errcode == WECOM_RATE_LIMITED:
            return Result(RATE_LIMITED, f"errcode 45009 {errmsg}")
        if errcode in WECOM_RETRY or not isinstance(errcode, int):
            return Result(RETRY, f"errcode {errcode} {errmsg}")
        return Result(REJECTED, f"errcode {errcode} {errmsg}", reason=f"errcode_{errcode}")


# --------------------------------------------------------------------------- webhook


class JsonWebhook(Destination):
    """POSTs alerts as JSON: ``{"type": "alert", "alert": {...}}`` or
    ``{"type": "digest", "count": N, "alerts": [...]}`` (every alert in full, ≤ 1000 per request).

    Headers: ``X-Candlewax-Id`` (alert id, or a hash of the digest's ids: an idempotency key),
    ``X-Candlewax-Timestamp`` and, with a secret, ``X-Candlewax-Signature: sha256=HEX`` — the
    HMAC-SHA256 of ``TIMESTAMP.BODY``.
    """

    kind = "webhook"
    per_request = 1000

    def __init__(
        self,
        channel: str,
        url: str,
        secret: str | None,
        headers: dict[str, str],
        limiter: RateLimiter,
    ) -> None:
        super().__init__(channel, channel, limiter, None)
        self._url = url
        self._secret = secret.encode() if secret else None
        self._headers = dict(headers)

    def payloads(self, alerts: Sequence[Alert]) -> list[Payload]:
        if len(alerts) == 1:
            return [Payload({"type": "alert", "alert": asdict(alerts[0])})]
        chunks = [alerts[i : i + self.per_request] for i in range(0, len(alerts), self.per_request)]
        return [
            Payload(
                {
                    "type": "digest",
                    "count": len(chunk),
                    "part": i + 1,
                    "parts": len(chunks),
                    "alerts": [asdict(a) for a in chunk],
                }
            )
            for i, chunk in enumerate(chunks)
        ]

    def post(self, client: httpx.Client, payload: Payload) -> Result:
        body = orjson.dumps(payload.body)
        ts = str(int(time.time()))
        if payload.body["type"] == "alert":
            ident = payload.body["alert"]["id"]
        else:
            ids = ",".join(a["id"] for a in payload.body["alerts"])
            ident = hashlib.sha256(ids.encode()).hexdigest()[:24]
        headers = {
            **self._headers,
            "Content-Type": "application/json",
            "X-Candlewax-Id": ident,
            "X-Candlewax-Timestamp": ts,
        }
        if self._secret is not None:
            mac = hmac.new(self._secret, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers["X-Candlewax-Signature"] = f"sha256={mac}"
        try:
            response = client.post(self._url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return _transport_error(exc)
        code = response.status_code
        if 200 <= code < 300:
            return Result(OK)
        if code == 429:
            retry_after = response.headers.get("Retry-After", "")
            wait = float(retry_after) if retry_after.replace(".", "", 1).isdigit() else None
            return Result(RATE_LIMITED, "HTTP 429", retry_after_s=wait)
        if code >= 500 or code in (408, 425):
            return Result(RETRY, f"HTTP {code}")
        return Result(REJECTED, f"HTTP {code}", reason=f"http_{code}")


# --------------------------------------------------------------------------- console


@dataclass
class ConsoleSink:
    """Where the console destination writes (a stream; tests give a list)."""

    lines: list[str] | None = None
    stream: Any = field(default=None)

    def write(self, line: str) -> None:
        if self.lines is not None:
            self.lines.append(line)
        else:
            out = self.stream or sys.stdout
            out.write(line + "\n")
            out.flush()


class Console(Destination):
    """Prints the plain-text message: for trying routes out, and for logs-only setups."""

    kind = "console"

    def __init__(
        self, channel: str, limiter: RateLimiter, language: str, sink: ConsoleSink | None = None
    ) -> None:
        super().__init__(channel, channel, limiter, None, language)
        self.sink = sink or ConsoleSink()

    def payloads(self, alerts: Sequence[Alert]) -> list[Payload]:
        return [
            Payload({"text": m}) for m in text.render(alerts, text.TELEGRAM_PLAIN, self.language)
        ]

    def post(self, client: httpx.Client, payload: Payload) -> Result:
        self.sink.write(payload.body["text"])
        return Result(OK)
