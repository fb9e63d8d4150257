"""Local servers on 127.0.0.1 that speak the Telegram Bot API, the WeCom group robot API and a
generic webhook, and *enforce* their rules: rate limits on their own arrival clock, markup
parsing (Telegram HTML / MarkdownV2), character and byte limits, tokens and keys, HMAC.

Every violation is counted (``violations``) and answered the way the platform answers it;
tests assert there were none. ``script`` queues forced answers (429, 5xx, hangs, 4xx, errcodes)
for the next requests.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import html
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from html.parser import HTMLParser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

# --------------------------------------------------------------------------- Telegram markup


class MarkupError(ValueError):
    pass


_HTML_TAGS = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "a",
    "code",
    "pre",
    "span",
    "tg-spoiler",
    "blockquote",
    "tg-emoji",
}


class _TelegramHtml(HTMLParser):
    """Telegram's HTML: a few tags, properly nested; '<', '>' and '&' must be escaped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HTML_TAGS:
            raise MarkupError(f'Unsupported start tag "{tag}"')
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack.pop() != tag:
            raise MarkupError(f'Unexpected end tag "{tag}"')

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            raise MarkupError("Unescaped '<' or '>'")
        if "&" in data:
            raise MarkupError("Unescaped '&'")
        self.text.append(data)

    def handle_entityref(self, name: str) -> None:
        if name not in ("lt", "gt", "amp", "quot"):
            raise MarkupError(f"Unsupported entity &{name};")
        self.text.append(html.unescape(f"&{name};"))

    def handle_charref(self, name: str) -> None:
        self.text.append(html.unescape(f"&#{name};"))


def parse_html(text: str) -> str:
    """The text Telegram would show for ``parse_mode=HTML``, or MarkupError."""
    parser = _TelegramHtml()
    parser.feed(text)
    parser.close()
    if parser.rawdata:  # an unterminated tag or entity left in the buffer
        raise MarkupError("Unclosed start tag or entity")
    if parser.stack:
        raise MarkupError(f'Can\'t find end tag corresponding to start tag "{parser.stack[-1]}"')
    return "".join(parser.text)


_MDV2_RESERVED = set("_*[]()~`>#+-=|{}.!")


def parse_markdownv2(text: str) -> str:
    """The text Telegram would show for ``parse_mode=MarkdownV2``, or MarkupError: every
    reserved character outside entity markup must be escaped with '\\'."""
    out: list[str] = []
    open_entities: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text) or not 1 <= ord(text[i + 1]) <= 126:
                raise MarkupError("Character '\\' is reserved")
            out.append(text[i + 1])
            i += 2
            continue
        token = text[i : i + 2] if text[i : i + 2] in ("__", "||") else ch
        if token in ("*", "_", "__", "~", "||"):
            if open_entities and open_entities[-1] == token:
                open_entities.pop()
            else:
                open_entities.append(token)
            i += len(token)
            continue
        if ch in _MDV2_RESERVED:
            raise MarkupError(
                f"Character '{ch}' is reserved and must be escaped with the preceding '\\'"
            )
        out.append(ch)
        i += 1
    if open_entities:
        raise MarkupError(f"Can't find end of {open_entities[-1]} entity")
    return "".join(out)


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


# --------------------------------------------------------------------------- base server


@dataclass
class Window:
    """Counts arrivals per key and tells whether one more would break ``count``/``window_s``."""

    count: int
    window_s: float
    arrivals: dict[str, collections.deque[float]] = field(
        default_factory=lambda: collections.defaultdict(collections.deque)
    )

    def admit(self, key: str, now: float) -> bool:
        q = self.arrivals[key]
        while q and now - q[0] >= self.window_s:
            q.popleft()
        if len(q) >= self.count:
            return False
        q.append(now)
        return True


class PlatformServer:
    """A ThreadingHTTPServer on 127.0.0.1 whose ``handle(path, query, body)`` answers POSTs."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.violations: list[str] = []
        self.requests: list[dict[str, Any]] = []
        #: Forced answers, each for the next request that ``when(query, body)`` accepts.
        self.script: list[tuple[Callable[[dict[str, str], bytes], bool], Callable[[], Any]]] = []
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[0] for k, v in parse_qs(parts.query).items()}
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                status, answer, headers = server._answer(
                    parts.path, query, body, dict(self.headers)
                )
                payload = orjson.dumps(answer)
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout we caused on purpose)

            def log_message(self, *args: object) -> None:
                return

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    def hang(self, seconds: float) -> Callable[[], tuple[int, dict[str, Any]]]:
        """A scripted answer that makes the client time out; the message is *not* taken (a
        platform that took it after all would show it twice: at-least-once, see docs)."""

        def action() -> tuple[int, dict[str, Any]]:
            self._closing.wait(seconds)
            return 504, {"ok": False, "error_code": 504, "description": "Gateway Timeout"}

        return action

    def answer(self, status: int, body: dict[str, Any]) -> Callable[[], tuple[int, dict[str, Any]]]:
        return lambda: (status, body)

    def force(
        self,
        *actions: Callable[[], Any],
        when: Callable[[dict[str, str], bytes], bool] | None = None,
    ) -> None:
        """Queue forced answers for the next requests (that ``when`` accepts)."""
        with self.lock:
            self.script += [(when or (lambda q, b: True), a) for a in actions]

    def _answer(
        self, path: str, query: dict[str, str], body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        now = time.monotonic()
        forced = None
        with self.lock:
            for i, (when, action) in enumerate(self.script):
                if when(query, body):
                    forced = action
                    del self.script[i]
                    break
        if forced is not None:
            result = forced()
            if result is not None:
                with self.lock:
                    self.requests.append({"t": now, "path": path, "forced": result[0]})
                return result[0], result[1], {}
        return self.handle(now, path, query, body, headers)

    def handle(
        self, now: float, path: str, query: dict[str, str], body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        raise NotImplementedError

    def violation(self, what: str) -> None:
        with self.lock:
            self.violations.append(what)

    def __enter__(self) -> PlatformServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


# --------------------------------------------------------------------------- Telegram


class TelegramServer(PlatformServer):
    """``POST /bot<token>/sendMessage``. Limits (scalable for fast tests): per chat
    ``chat_rate``, per group chat (negative id) also ``group_rate``, per bot ``bot_rate``."""

    def __init__(
        self,
        token: str,
        chat_rate: tuple[int, float] = (1, 1.0),
        group_rate: tuple[int, float] = (20, 60.0),
        bot_rate: tuple[int, float] = (30, 1.0),
        forbidden_chats: tuple[str, ...] = (),
    ) -> None:
        super().__init__()
        self.token = token
        self.chat = Window(*chat_rate)
        self.group = Window(*group_rate)
        self.bot = Window(*bot_rate)
        self.forbidden_chats = set(forbidden_chats)
        self.messages: list[dict[str, Any]] = []  # accepted: chat_id, text (as shown), t, mode

    def handle(
        self, now: float, path: str, query: dict[str, str], body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path != f"/bot{self.token}/sendMessage":
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}, {}
        req = orjson.loads(body)
        chat = str(req.get("chat_id", ""))
        with self.lock:
            self.requests.append({"t": now, "path": "sendMessage", "chat_id": chat})
        if chat in self.forbidden_chats:
            return (
                403,
                {
                    "ok": False,
                    "error_code": 403,
                    "description": "Forbidden: bot was kicked from the group chat",
                },
                {},
            )
        with self.lock:
            ok = self.bot.admit("bot", now) and self.chat.admit(chat, now)
            if ok and chat.startswith("-"):
                ok = self.group.admit(chat, now)
        if not ok:
            self.violation(f"rate limit broken for chat {chat} at {now:.3f}")
            return (
                429,
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                },
                {},
            )
        mode = req.get("parse_mode")
        raw = req.get("text", "")
        try:
            shown = (
                parse_html(raw)
                if mode == "HTML"
                else parse_markdownv2(raw)
                if mode == "MarkdownV2"
                else raw
            )
        except MarkupError as exc:
            self.violation(f"markup: {exc}")
            return (
                400,
                {
                    "ok": False,
                    "error_code": 400,
                    "description": f"Bad Request: can't parse entities: {exc}",
                },
                {},
            )
        if not shown.strip():
            self.violation("empty message")
            return (
                400,
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: message text is empty",
                },
                {},
            )
        if utf16_len(shown) > 4096:
            self.violation(f"message of {utf16_len(shown)} UTF-16 units")
            return (
                400,
                {"ok": False, "error_code": 400, "description": "Bad Request: message is too long"},
                {},
            )
        with self.lock:
            self.messages.append(
                {"chat_id": chat, "text": shown, "raw": raw, "t": now, "mode": mode}
            )
        return 200, {"ok": True, "result": {"message_id": len(self.messages), "text": shown}}, {}


# --------------------------------------------------------------------------- WeCom


class WeComServer(PlatformServer):
    """``POST /cgi-bin/webhook/send?key=KEY``: answers HTTP 200 with ``errcode`` always
    (93000 invalid key, 45009 rate limited, 40058 too long); ``rate`` per robot key."""

    def __init__(self, key: str, rate: tuple[int, float] = (20, 60.0)) -> None:
        super().__init__()
        self.key = key
        self.window = Window(*rate)
        self.messages: list[dict[str, Any]] = []

    def handle(
        self, now: float, path: str, query: dict[str, str], body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        if path != "/cgi-bin/webhook/send":
            return 404, {}, {}
        with self.lock:
            self.requests.append({"t": now, "path": path})
        if query.get("key") != self.key:
            return 200, {"errcode": 93000, "errmsg": "invalid webhook url, hint: [..]"}, {}
        try:
            req = orjson.loads(body)  # invalid UTF-8 fails here, as it does there
        except orjson.JSONDecodeError:
            self.violation("body is not JSON / UTF-8")
            return 200, {"errcode": 40035, "errmsg": "invalid args"}, {}
        with self.lock:
            ok = self.window.admit(self.key, now)
        if not ok:
            self.violation(f"rate limit broken at {now:.3f}")
            return 200, {"errcode": 45009, "errmsg": "api freq out of limit"}, {}
        kind = req.get("msgtype")
        if kind not in ("text", "markdown"):
            return 200, {"errcode": 40008, "errmsg": "invalid message type"}, {}
        content = req[kind].get("content", "")
        limit = 2048 if kind == "text" else 4096
        size = len(content.encode("utf-8"))
        if size > limit:
            self.violation(f"{kind} content of {size} bytes")
            return 200, {"errcode": 40058, "errmsg": "content exceed max length"}, {}
        with self.lock:
            self.messages.append({"msgtype": kind, "content": content, "t": now, "body": req[kind]})
        return 200, {"errcode": 0, "errmsg": "ok"}, {}


# --------------------------------------------------------------------------- webhook


class WebhookServer(PlatformServer):
    """A JSON receiver that checks ``X-Candlewax-Signature`` when given a secret."""

    def __init__(self, secret: str | None = None) -> None:
        super().__init__()
        self.secret = secret
        self.bodies: list[dict[str, Any]] = []

    def handle(
        self, now: float, path: str, query: dict[str, str], body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        with self.lock:
            self.requests.append({"t": now, "path": path})
        if self.secret is not None:
            ts = headers.get("X-Candlewax-Timestamp", "")
            want = hmac.new(self.secret.encode(), ts.encode() + b"." + body, hashlib.sha256)
            if headers.get("X-Candlewax-Signature") != f"sha256={want.hexdigest()}":
                self.violation("bad signature")
                return 401, {"error": "bad signature"}, {}
        obj = orjson.loads(body)
        with self.lock:
            self.bodies.append({**obj, "_id": headers.get("X-Candlewax-Id"), "_t": now})
        return 200, {"ok": True}, {}

    def alert_ids(self) -> list[str]:
        """Every alert id received, digests expanded, in arrival order (duplicates kept)."""
        out: list[str] = []
        with self.lock:
            for b in self.bodies:
                if b["type"] == "alert":
                    out.append(b["alert"]["id"])
                else:
                    out += [a["id"] for a in b["alerts"]]
        return out


# --------------------------------------------------------------------------- alerts


def sample_alerts(
    n: int,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
    start_ms: int = 1_723_161_480_000,
) -> list[Any]:
    """``n`` distinct, valid alerts: rules, intervals, severities and symbols in rotation."""
    from candlewax.codec import INTERVALS, Alert, alert_id

    rules = (("range", "1m", "0.002"), ("move", "5m", "0.01"), ("zscore", "1m", "6"))
    out = []
    for i in range(n):
        rule, interval, threshold = rules[i % 3]
        symbol = symbols[i % len(symbols)]
        # Each alert its own window (an alert is named by its window), aligned to its interval.
        length = INTERVALS[interval]
        window = (start_ms // length + i) * length
        value = str(float(threshold) * (1.2 if i % 4 else 2.5))
        out.append(
            Alert(
                id=alert_id(rule, "binance", symbol, interval, window),
                rule=rule,
                venue="binance",
                symbol=symbol,
                interval=interval,
                window_start_ms=window,
                ts_ms=window + 1234,
                value=value,
                threshold=threshold,
                price="61707.30000000",
                severity="critical" if i % 4 == 0 else "warning",
                text=f"{symbol} {interval} {rule} {value} >= {threshold}",
            )
        )
    return out
