"""Logging for every candlewax process: one line per state change, never per message;
human-readable on a terminal, JSON lines otherwise (containers, CI).

**One redaction path.** :data:`SECRETS` holds every secret a process has loaded (tokens, keys,
passwords — registered where they are read) and redacts them, together with anything shaped like
a credential in a URL (``?token=…``, ``&key=…``, ``user:password@``, Telegram's ``/bot<token>/``),
from every log line, exception text and traceback (a filter on each handler), from the one-line
errors the CLI prints, and from the raw frames connectors dead-letter. A server that echoes a
token back, in a handshake error or an error frame, does not get it into a log.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any

import orjson

_MASK = "***"
#: Query-string and header credentials, and URL user info.
_PATTERNS = (
    (
        re.compile(
            r"(?i)([?&;](?:token|api[_-]?key|key|access_token|auth|signature|secret|password)=)"
            r"[^&\s\"'#<>]+"
        ),
        r"\1" + _MASK,
    ),
    (re.compile(r"(?i)(/bot)[0-9]{3,}:[A-Za-z0-9_-]{10,}"), r"\1" + _MASK),
    (re.compile(r"(?i)([a-z][a-z0-9+.-]*://[^/\s:@]+):[^@\s/]+@"), r"\1:" + _MASK + "@"),
    (
        re.compile(
            r"(?i)((?:authorization|x-mbx-apikey|x-api-key)[\"']?\s*[:=]\s*[\"']?)[^\s\"',]+"
        ),
        r"\1" + _MASK,
    ),
)
#: Values shorter than this are not treated as secrets (they would mask ordinary words).
_MIN_SECRET = 6


class Secrets:
    """The secrets this process knows, and the one function that hides them."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()

    def add(self, *values: str | None) -> None:
        with self._lock:
            for value in values:
                if value and len(value) >= _MIN_SECRET:
                    self._values.add(value)

    def redact(self, text: str) -> str:
        """``text`` with every known secret and credential-shaped URL part masked."""
        for secret in sorted(self._values, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, _MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def redact_bytes(self, raw: bytes) -> bytes:
        """The same for raw frames; bytes that are not UTF-8 lose only the known secrets."""
        try:
            return self.redact(raw.decode("utf-8")).encode("utf-8")
        except UnicodeDecodeError:
            for secret in self._values:
                raw = raw.replace(secret.encode(), _MASK.encode())
            return raw


#: The process-wide registry.
SECRETS = Secrets()


class RedactFilter(logging.Filter):
    """Masks secrets in a record's message and in its exception text before any formatter
    sees them."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = SECRETS.redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = SECRETS.redact(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = SECRETS.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = SECRETS.redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        obj: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info or record.exc_text:
            obj["exc"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return orjson.dumps(obj).decode()


def setup_logging(level: str = "INFO") -> None:
    """One handler on stderr, with :class:`RedactFilter`, for every candlewax process."""
    handler = logging.StreamHandler(sys.stderr)
    if sys.stderr.isatty():
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    else:
        handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs full request URLs (bot tokens, webhook keys) at INFO; httpcore at DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # websocket-client logs handshake failures with headers at its own will.
    logging.getLogger("websocket").setLevel(logging.WARNING)
