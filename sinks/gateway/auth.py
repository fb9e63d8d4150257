"""Logins to the private ``user`` stream: an API key and an HMAC-SHA256 signature of a fresh
timestamp.

The keys file (``gateway.keys_file``, a mounted Secret) holds one line per key, a hash and never
the secret itself::

    # candlewax gateway keys: key id = "sha256:" + hex(SHA-256(secret))
    desk-1 = "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

A client proves it holds the secret by signing ``"<key id>:<timestamp ms>"`` with
HMAC-SHA256, keyed by the SHA-256 digest of its secret::

    key = hashlib.sha256(secret.encode()).digest()
    signature = hmac.new(key, f"{key_id}:{timestamp}".encode(), hashlib.sha256).hexdigest()

So the gateway keeps only hashes in memory, compares signatures in constant time
(:func:`hmac.compare_digest`) and never logs a key's hash or a signature. A timestamp more than
``login_window_ms`` from the gateway's clock is refused (a replayed login goes stale).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from candlewax.errors import ConfigError

_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HASH = re.compile(r"sha256:([0-9a-f]{64})")
_SIGNATURE = re.compile(r"[0-9a-fA-F]{64}")
#: Outcomes of a login (the metric's label values).
OUTCOMES: Final = ("ok", "bad_signature", "unknown_key", "stale", "bad_request", "disabled")


def key_hash(secret: str) -> str:
    """The keys file's value for ``secret``."""
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def sign(key_id: str, secret: str, timestamp_ms: int) -> str:
    """What a client sends as ``signature`` (for tests and the docs' example)."""
    key = hashlib.sha256(secret.encode()).digest()
    return hmac.new(key, f"{key_id}:{timestamp_ms}".encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Keys:
    """Key id → the SHA-256 digest of its secret."""

    digests: dict[str, bytes] = field(default_factory=dict, repr=False)

    @classmethod
    def load(cls, path: Path | None) -> Keys:
        if path is None:
            return cls()
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"gateway keys file {path} cannot be read: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"gateway keys file {path} is not TOML: {exc}") from None
        digests = {}
        for key_id, value in doc.items():
            if not _KEY_ID.fullmatch(key_id):
                raise ConfigError(f"gateway keys file {path}: key id {key_id[:64]!r} must be 1-64 letters, digits, . _ -")  # fmt: skip
            m = _HASH.fullmatch(value) if isinstance(value, str) else None
            if m is None:  # the value is not shown: it may be a secret written by mistake
                raise ConfigError(f'gateway keys file {path}: key {key_id} must be "sha256:<64 hex digits>" (docs/gateway.md)')  # fmt: skip
            digests[key_id] = bytes.fromhex(m[1])
        return cls(digests)

    def __bool__(self) -> bool:
        return bool(self.digests)

    def check(self, params: dict[str, Any], now_ms: int, window_ms: int) -> tuple[str, str | None]:
        """(outcome, key id when ok) for a LOGIN's params."""
        if not self.digests:
            return "disabled", None
        key_id, ts, signature = params.get("apiKey"), params.get("timestamp"), params.get("signature")  # fmt: skip
        if not (
            isinstance(key_id, str)
            and _KEY_ID.fullmatch(key_id)
            and type(ts) is int
            and isinstance(signature, str)
            and _SIGNATURE.fullmatch(signature)
        ):
            return "bad_request", None
        digest = self.digests.get(key_id)
        # An unknown key costs the same HMAC as a known one.
        expected = hmac.new(digest or b"\0" * 32, f"{key_id}:{ts}".encode(), hashlib.sha256).digest()  # fmt: skip
        good = hmac.compare_digest(expected, bytes.fromhex(signature))
        if digest is None:
            return "unknown_key", None
        if not good:
            return "bad_signature", None
        if abs(now_ms - ts) > window_ms:
            return "stale", None
        return "ok", key_id
