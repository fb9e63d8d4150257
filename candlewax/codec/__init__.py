"""The wire codec: the only place that defines candlewax's records — their fields, limits and
canonical form, their encoding and their decoding.

- :mod:`~candlewax.codec.rules` — limits, charsets, canonical decimals, the fixed set of
  rejection reasons, and the validators of single fields;
- :mod:`~candlewax.codec.strictjson` — JSON from untrusted sources (I-JSON: no repeated member,
  no lone surrogate; bounded size);
- :mod:`~candlewax.codec.records` — Trade, Heartbeat, the markers Since and Gap, Bar, Alert,
  UserEvent, DeadLetter;
- :mod:`~candlewax.codec.columns` — the same records column-wise: the flow's fast path, which
  accepts exactly the canonical messages, and the column encoders.

Every decoder is total: for any input it returns a record or raises
:class:`~candlewax.errors.ParseError` with a reason from :data:`REASONS`, and nothing else.
The rules are described for users in ``docs/reliability.md``.
"""

from candlewax.codec.records import (
    ALERT_FIELDS,
    BAR_FIELDS,
    DELIVERY_OUTCOMES,
    HEARTBEAT_FIELDS,
    RAW_LIMIT,
    TRADE_FIELDS,
    USER_EVENT_TYPES,
    USER_PATTERN,
    Alert,
    Bar,
    DeadLetter,
    Gap,
    Heartbeat,
    Marker,
    Rejected,
    Since,
    Trade,
    UserEvent,
    alert_id,
    decode_message,
    decode_record,
    encode_trades,
    user_id,
)
from candlewax.codec.rules import (
    DECIMALS,
    INTERVALS,
    MAX_ARRAY_ITEMS,
    MAX_MESSAGE_BYTES,
    MAX_MINUTE_TRADES,
    MAX_NOTIONAL,
    MAX_TS_MS,
    MAX_VALUE,
    MIN_TS_MS,
    REASONS,
    SCALE,
    SCHEMA_VERSION,
    SEVERITIES,
    SIDES,
    divide_rounded,
    format_ratio,
    format_scaled,
    message_key,
    normalize_symbol,
    to_scaled,
)
from candlewax.errors import ParseError

__all__ = [
    "ALERT_FIELDS",
    "BAR_FIELDS",
    "DECIMALS",
    "DELIVERY_OUTCOMES",
    "HEARTBEAT_FIELDS",
    "INTERVALS",
    "MAX_ARRAY_ITEMS",
    "MAX_MESSAGE_BYTES",
    "MAX_MINUTE_TRADES",
    "MAX_NOTIONAL",
    "MAX_TS_MS",
    "MAX_VALUE",
    "MIN_TS_MS",
    "RAW_LIMIT",
    "REASONS",
    "SCALE",
    "SCHEMA_VERSION",
    "SEVERITIES",
    "SIDES",
    "TRADE_FIELDS",
    "USER_EVENT_TYPES",
    "USER_PATTERN",
    "Alert",
    "Bar",
    "DeadLetter",
    "Gap",
    "Heartbeat",
    "Marker",
    "ParseError",
    "Rejected",
    "Since",
    "Trade",
    "UserEvent",
    "alert_id",
    "decode_message",
    "decode_record",
    "divide_rounded",
    "encode_trades",
    "format_ratio",
    "format_scaled",
    "message_key",
    "normalize_symbol",
    "to_scaled",
    "user_id",
]
