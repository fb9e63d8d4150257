"""Field types shared by the settings models: secrets that never print, comma-or-JSON lists,
and librdkafka property maps.

A secret is a pydantic :class:`~pydantic.SecretStr`: its repr and its ordinary JSON are
``**********``. Only a dump with ``context={"reveal_secrets": True}`` writes the value — the one
use of that is handing the settings to a child process (``Settings.to_json``). Every secret is
registered for log redaction (:data:`candlewax.logs.SECRETS`) as it is validated.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import orjson
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    PlainSerializer,
    SecretStr,
    SerializationInfo,
)
from pydantic_settings import NoDecode

from candlewax.logs import SECRETS


def _register(value: SecretStr) -> SecretStr:
    SECRETS.add(value.get_secret_value())
    return value


def _dump_secret(value: SecretStr, info: SerializationInfo) -> str:
    if info.context and info.context.get("reveal_secrets"):
        return value.get_secret_value()
    return str(value)


#: A secret string: masked in reprs, logs and ordinary dumps.
Secret = Annotated[
    SecretStr,
    AfterValidator(_register),
    PlainSerializer(_dump_secret, return_type=str, when_used="json"),
]


class SecretFileError(ValueError):
    """A secret file that cannot be read; ``str()`` is the reason (``No such file...``)."""


def read_secret_file(path: Path) -> str:
    """The stripped text of a mounted secret file, registered for redaction at once."""
    try:
        value = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretFileError(getattr(exc, "strerror", None) or "not UTF-8 text") from None
    SECRETS.add(value)
    return value


#: A TCP port; 0 means "any free one" where a listener takes it.
Port = Annotated[int, Field(ge=0, le=65535)]


def reveal(value: SecretStr | str) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def _comma_list(value: Any) -> Any:
    """``"a,b"`` or ``'["a","b"]'`` (environment, flags) → a list; anything else as it is."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return orjson.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


def _strings(value: Any) -> Any:
    """A list of strings also takes numbers (Telegram chat ids are often written as ints)."""
    value = _comma_list(value)
    if isinstance(value, list | tuple):
        return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
    return value


#: A list written as TOML/JSON array or, from the environment or a flag, ``a,b,c``.
CommaList = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_strings)]

#: librdkafka properties whose values are secrets (masked, redacted from logs).
_SECRET_PROPERTY = re.compile(r"password|secret|sasl\.jaas\.config|\.pem$|oauthbearer\.config")
#: Property names as librdkafka spells them (CONFIGURATION.md): lower case, dots, underscores.
_PROPERTY_NAME = re.compile(r"[a-z][a-z0-9._]{0,99}")


def is_secret_property(name: str) -> bool:
    return _SECRET_PROPERTY.search(name) is not None


def _kafka_properties(value: Any) -> Any:
    """A table of librdkafka properties → name → str, the secret ones as SecretStr. TOML
    booleans and numbers become librdkafka's text (``true``, ``6000``)."""
    if not isinstance(value, Mapping):
        return value  # pydantic says what is wrong
    out: dict[str, str | SecretStr] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _PROPERTY_NAME.fullmatch(name):
            raise ValueError(f"{str(name)[:60]!r} is not a librdkafka property name")
        if isinstance(item, SecretStr):
            text = item.get_secret_value()
        elif isinstance(item, bool):
            text = "true" if item else "false"
        elif isinstance(item, int | float | str):
            text = str(item)
        else:
            raise ValueError(f"property {name!r}: a value must be a string, number or boolean")
        if is_secret_property(name):
            SECRETS.add(text)
            out[name] = SecretStr(text)
        else:
            out[name] = text
    return out


def _dump_properties(value: Mapping[str, str | SecretStr], info: SerializationInfo) -> Any:
    reveal_all = bool(info.context and info.context.get("reveal_secrets"))
    return {
        k: (v.get_secret_value() if reveal_all else str(v)) if isinstance(v, SecretStr) else v
        for k, v in value.items()
    }


#: ``{"security.protocol": "SASL_SSL", "sasl.password": SecretStr(...)}``.
KafkaProperties = Annotated[
    dict[str, str | SecretStr],
    BeforeValidator(_kafka_properties),
    PlainSerializer(_dump_properties, when_used="json"),
]
