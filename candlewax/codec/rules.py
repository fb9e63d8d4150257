"""The input rules: limits, charsets, canonical forms and the fixed set of rejection reasons.

Every record field is checked by one of the validators here, so a rule is written once and
the exact decoder, the vectorized fast path (``candlewax.codec.columns``, which compiles the same
patterns for Polars) and the venue parsers all hold it. Each validator takes an untrusted value
and returns the canonical one or raises :class:`ParseError` with a reason from :data:`REASONS`;
none of them raises anything else, for any input.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from candlewax.errors import ParseError

SCHEMA_VERSION: Final = 1

#: Fixed-point scale of the bar kernel: prices and quantities are exact at 8 decimals, the
#: precision every major crypto venue publishes (Binance, OKX, Bybit, Coinbase, Kraken).
DECIMALS: Final = 8
SCALE: Final = 10**DECIMALS

#: Event times outside [2000-01-01, 2100-01-01) are "absurd": almost always seconds or
#: nanoseconds passed where milliseconds were expected.
MIN_TS_MS: Final = 946_684_800_000
MAX_TS_MS: Final = 4_102_444_800_000

SIDES: Final = ("buy", "sell")
SEVERITIES: Final = ("warning", "critical")
INTERVALS: Final[dict[str, int]] = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    # A calendar day (flows/calendar.py): 24 h in UTC or a fixed offset, 23-25 h across a DST
    # change of an IANA zone, a session's hours for a symbol with a trading session.
    "1d": 86_400_000,
}
#: Intervals whose windows are calendar windows of varying length (not ``ts - ts % length``).
CALENDAR_INTERVALS: Final = frozenset({"1d"})
#: The longest a calendar window may last (a 25 h day across a DST change, with margin).
MAX_WINDOW_MS: Final = 26 * 3_600_000

#: Every reason a rejection (dead letter, parse-error metric) may carry: a bounded set.
REASONS: Final = (
    "json",  # not JSON: syntax, invalid UTF-8, a lone surrogate, NaN
    "duplicate_key",  # an object names a member twice (I-JSON, RFC 7493)
    "too_large",  # a message, array or text over its limit
    "not_object",
    "schema_version",
    "unknown_type",
    "unknown_field",
    "missing_field",
    "bad_type",
    "bad_name",  # venue, symbol, id, rule outside their charset or length
    "bad_decimal",
    "non_positive",
    "out_of_range",
    "precision",
    "bad_side",
    "bad_timestamp",
    "implausible_time",  # would move event time further than a plausible clock allows
    "implausible_id",  # a trade id far from its symbol's sequence (connectors)
    "late",
    "venue_frame",
    "gap",
    "notify_rejected",
    "notify_unavailable",
    "notify_error",  # candlewax's own error while delivering (logged with its traceback)
)

# --------------------------------------------------------------------------- limits

#: Largest message candlewax reads or writes. Kafka's default ``message.max.bytes`` is
#: 1,048,588; everything candlewax writes stays far below (dead letters ≤ ~40 KB, see records).
MAX_MESSAGE_BYTES: Final = 1_000_000
#: Most trades in one ``trades`` message (the JSON-array form).
MAX_ARRAY_ITEMS: Final = 10_000
#: A price or quantity is below 1e14 and one trade's notional (price × qty) below 1e13 (ten
#: trillion units of the quote currency): beyond any real market. With at most
#: MAX_MINUTE_TRADES trades in a symbol's minute, a 1h bar's quote volume stays below
#: 60 × 1e7 × 1e13 = 6e21: inside the kernel's Int128 (1e-16 units, < 1.7e22) and the Parquet
#: DECIMAL(38,16) column (< 1e22), so no input can overflow a sum.
MAX_VALUE: Final = 10**14
MAX_NOTIONAL: Final = 10**13
#: Most trades one (venue, symbol) 1m bar takes; later ones are rejected ``too_large``.
MAX_MINUTE_TRADES: Final = 10_000_000
#: Digits after the point a decimal may carry (beyond :data:`DECIMALS` they must be zeros).
MAX_FRACTION_DIGITS: Final = 30
#: Longest text field of an alert (its human-readable ``text``) and of a dead letter's detail.
MAX_TEXT: Final = 1_000

# --------------------------------------------------------------------------- charsets
# Written once as regular-expression text that Python's ``re`` and Polars (Rust ``regex``) read
# the same way: ASCII classes only, no look-around, no backreferences.

#: Venue: lower case, digits, ``.``, ``_``, ``-``; starts with a letter or digit; ≤ 32.
VENUE_PATTERN: Final = r"[a-z0-9][a-z0-9._-]{0,31}"
#: Symbol: normalized (upper case, no separators), ``.`` (``BRK.B``) and ``:`` (Finnhub's
#: ``BINANCE:BTCUSDT``) allowed; starts with a letter or digit; ≤ 64.
SYMBOL_PATTERN: Final = r"[A-Z0-9][A-Z0-9.:]{0,63}"
#: Trade id: letters, digits, ``.``, ``_``, ``:``, ``-``; 1..64 (UUIDs, digit strings, ...).
ID_PATTERN: Final = r"[A-Za-z0-9._:-]{1,64}"
#: Alert rule name.
RULE_PATTERN: Final = r"[a-z][a-z0-9_]{0,31}"
#: A canonical decimal: ASCII digits, at most one ``.``, no sign, exponent, underscore,
#: whitespace or leading zero (``0.5`` yes; ``.5``, ``00.5``, ``+5``, ``1e5``, ``٥`` no).
DECIMAL_PATTERN: Final = r"(?:0|[1-9][0-9]*)(?:\.[0-9]+)?"
#: A canonical non-negative integer in decimal digits.
DIGITS_PATTERN: Final = r"(?:0|[1-9][0-9]*)"

# Matched with fullmatch: "$" would also match before a trailing newline.
_VENUE_RE = re.compile(VENUE_PATTERN)
_SYMBOL_RE = re.compile(SYMBOL_PATTERN)
_ID_RE = re.compile(ID_PATTERN)
_RULE_RE = re.compile(RULE_PATTERN)
_DECIMAL_RE = re.compile(DECIMAL_PATTERN)
_DIGITS_RE = re.compile(DIGITS_PATTERN)
_ALERT_ID_RE = re.compile(r"[0-9a-f]{24}")
_NAME_RULES = {
    "venue": (_VENUE_RE, VENUE_PATTERN),
    "symbol": (_SYMBOL_RE, SYMBOL_PATTERN),
    "id": (_ID_RE, ID_PATTERN),
    "rule": (_RULE_RE, RULE_PATTERN),
    "alert_id": (_ALERT_ID_RE, "24 lower-case hex digits"),
}
#: Longest decimal text looked at before any digit is read: 14 whole digits, the point and
#: MAX_FRACTION_DIGITS, with room for the 16-decimal quote sums of bars (Σ price·qty < 1e26).
_MAX_DECIMAL_CHARS = 64


def _show(value: Any) -> str:
    """A bounded, printable rendering of a bad value for error details."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def type_name(value: Any) -> str:
    """A value's JSON-ish type name for error details (``null``, ``str``, ``dict``, ...)."""
    return "null" if value is None else type(value).__name__


def _string(value: Any, field: str, expected: str = "a string") -> str:
    """``value`` if it is a string; missing_field for null, bad_type for anything else."""
    if value is None:
        raise ParseError("missing_field", field)
    if not isinstance(value, str):
        raise ParseError("bad_type", f"{field} is a {type_name(value)}, expected {expected}")
    return value


# --------------------------------------------------------------------------- names


def name(value: Any, field: str, kind: str | None = None) -> str:
    """A venue, symbol, trade id, rule name or alert id: a string of its charset (see the
    patterns); ``kind`` when the field's name is not the kind's."""
    pattern, text = _NAME_RULES[kind or field]
    if value == "":
        raise ParseError("missing_field", field)
    if not pattern.fullmatch(_string(value, field)):
        raise ParseError("bad_name", f"{field}={_show(value)} is not of the form {text}")
    return value


def is_venue(value: object) -> bool:
    return isinstance(value, str) and _VENUE_RE.fullmatch(value) is not None


def choice(value: Any, field: str, allowed: tuple[str, ...], reason: str = "bad_type") -> str:
    if value is None:
        raise ParseError("missing_field", field)
    if not isinstance(value, str) or value not in allowed:
        raise ParseError(reason, f"{field}={_show(value)}, expected one of {', '.join(allowed)}")
    return value


def side(value: Any) -> str | None:
    """The aggressor: ``buy``, ``sell`` or null (the venue does not say)."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in SIDES:
        raise ParseError("bad_side", f"side={_show(value)}, expected buy, sell or null")
    return value


def text(value: Any, field: str, limit: int = MAX_TEXT) -> str:
    if len(_string(value, field)) > limit:
        raise ParseError("too_large", f"{field} holds {len(value)} characters, at most {limit}")
    return value


# --------------------------------------------------------------------------- numbers


def integer(value: Any, field: str, lo: int, hi: int) -> int:
    """A JSON integer with ``lo <= value <= hi`` (never a float or a boolean)."""
    if value is None:
        raise ParseError("missing_field", field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError("bad_type", f"{field} is a {type_name(value)}, expected an integer")
    if not lo <= value <= hi:
        raise ParseError("out_of_range", f"{field}={_show(value)} is outside {lo}..{hi}")
    return value


def timestamp(value: Any, field: str, required: bool = True) -> int | None:
    """Integer epoch milliseconds in [2000-01-01, 2100-01-01)."""
    if value is None:
        if required:
            raise ParseError("missing_field", field)
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParseError(
            "bad_timestamp", f"{field}={_show(value)} is not integer epoch milliseconds"
        )
    if not MIN_TS_MS <= value < MAX_TS_MS:
        raise ParseError(
            "bad_timestamp",
            f"{field}={_show(value)} is outside 2000..2100 (seconds or ns instead of ms?)",
        )
    return value


def timestamp_text(value: Any, field: str) -> int:
    """Epoch milliseconds that a venue sends as digit text (``"1652459224818"``, OKX, Bybit
    legacy) or as a JSON integer → int, checked like :func:`timestamp`."""
    if isinstance(value, str):
        if len(value) > 13 or not _DIGITS_RE.fullmatch(value):
            raise ParseError("bad_timestamp", f"{field}={_show(value)} is not epoch milliseconds")
        value = int(value)
    return timestamp(value, field)  # type: ignore[return-value]


def digits(value: Any, field: str, max_digits: int = 19) -> int:
    """A non-negative integer sent as canonical digit text (``"1652459224818"``) → int."""
    if not isinstance(value, str):
        raise ParseError("bad_type", f"{field} is a {type_name(value)}, expected digit text")
    if len(value) > max_digits or not _DIGITS_RE.fullmatch(value):
        raise ParseError("bad_type", f"{field}={_show(value)} is not canonical digits")
    return int(value)


def decimal(
    value: Any,
    field: str,
    *,
    positive: bool = True,
    whole_digits: int = 14,
    fraction_digits: int = DECIMALS,
) -> str:
    """A canonical decimal string, exactly as it came (trailing zeros kept).

    At most ``whole_digits`` digits before the point (default: below :data:`MAX_VALUE`), and at
    most ``fraction_digits`` significant digits after it; zeros beyond those are fine, up to
    :data:`MAX_FRACTION_DIGITS`. ``positive`` rejects zero; negatives never pass.
    """
    if len(_string(value, field, "a decimal string")) > _MAX_DECIMAL_CHARS:
        raise ParseError("bad_decimal", f"{field} holds {len(value)} characters")
    if not _DECIMAL_RE.fullmatch(value):
        if value.startswith("-") and _DECIMAL_RE.fullmatch(value[1:]):
            raise ParseError("non_positive", f"{field}={_show(value)}")
        raise ParseError(
            "bad_decimal", f"{field}={_show(value)} is not a canonical decimal (digits, one '.')"
        )
    whole, _, frac = value.partition(".")
    if len(whole) > whole_digits:
        raise ParseError("out_of_range", f"{field}={_show(value)} is >= 1e{whole_digits}")
    if len(frac) > MAX_FRACTION_DIGITS:
        raise ParseError("bad_decimal", f"{field} has {len(frac)} digits after the point")
    if frac[fraction_digits:].strip("0"):
        raise ParseError(
            "precision", f"{field}={_show(value)} has more than {fraction_digits} decimals"
        )
    if positive and not (whole.strip("0") or frac.strip("0")):
        raise ParseError("non_positive", f"{field}={_show(value)}")
    return value


def decimal_from_number(value: Any, field: str) -> str:
    """A JSON number of a venue frame or a file → canonical decimal text, exactly.

    Integers convert as they are; floats by their shortest round-trip text (``9e-05`` →
    ``"0.00009"``, ``61837.63`` → ``"61837.63"``), never by their binary expansion. Strings must
    already be canonical (:func:`decimal`). The result is checked like any decimal field.
    """
    if isinstance(value, bool):
        raise ParseError("bad_type", f"{field} is a boolean")
    if isinstance(value, int):
        if not -MAX_VALUE < value < MAX_VALUE:
            raise ParseError("out_of_range", f"{field}={_show(value)} is >= 1e14")
        value = str(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ParseError("bad_decimal", f"{field}={_show(value)} is not finite")
        if abs(value) >= MAX_VALUE:
            raise ParseError("out_of_range", f"{field}={_show(value)} is >= 1e14")
        try:
            exact = Decimal(repr(value))
        except InvalidOperation:  # pragma: no cover - repr of a finite float always parses
            raise ParseError("bad_decimal", f"{field}={_show(value)}") from None
        if exact.adjusted() < -MAX_FRACTION_DIGITS:
            raise ParseError("precision", f"{field}={_show(value)} is below 1e-{DECIMALS}")
        value = format(exact, "f")
    if isinstance(value, str) and value.startswith("-"):
        raise ParseError("non_positive", f"{field}={_show(value)}")
    return decimal(value, field)


def trade_id(value: Any, field: str = "id") -> str:
    """A venue's trade id as our id text: strings of the id charset, or JSON integers
    0..2**63-1 (their digits). Floats are refused: above 2**64 the JSON parser has already made
    a float of an integer, and its digits are no longer the id."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 2**63:
            raise ParseError("out_of_range", f"{field}={_show(value)} is outside 0..2**63-1")
        return str(value)
    return name(value, field, "id")


def sequential_id(value: Any, field: str = "id") -> int:
    """A trade id that must be a non-negative integer (venues with consecutive ids)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 2**63:
            raise ParseError("out_of_range", f"{field}={_show(value)} is outside 0..2**63-1")
        return value
    if isinstance(value, str) and len(value) <= 19 and _DIGITS_RE.fullmatch(value):
        number = int(value)
        if number < 2**63:
            return number
    raise ParseError("bad_type", f"{field}={_show(value)} is not an integer trade id")


# --------------------------------------------------------------------------- exact amounts


def to_scaled(value: str) -> int:
    """Exact fixed-point value of a canonical decimal string, in units of 10**-DECIMALS.

    The text must have passed :func:`decimal` (bounded length, ASCII digits): no unbounded
    ``int()`` of untrusted text ever runs here.

    >>> to_scaled("61828.01"), to_scaled("0.00100000")
    (6182801000000, 100000)
    """
    whole, _, frac = value.partition(".")
    frac = frac[:DECIMALS].ljust(DECIMALS, "0")
    return int(whole) * SCALE + int(frac)


def format_scaled(units: int, scale_decimals: int = DECIMALS, min_decimals: int = DECIMALS) -> str:
    """Inverse of :func:`to_scaled`, for any scale: keeps every significant digit.

    ``format_scaled(760484523000000000, 16)`` → ``"76.04845230"`` (trailing zeros beyond
    ``min_decimals`` dropped, never a digit that carries value).
    """
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), 10**scale_decimals)
    digits_ = str(frac).rjust(scale_decimals, "0") if scale_decimals else ""
    keep = max(min_decimals, len(digits_.rstrip("0")))
    digits_ = (digits_ + "0" * keep)[:keep]
    return f"{sign}{whole}.{digits_}" if keep else f"{sign}{whole}"


def format_ratio(value: float) -> str:
    """A non-negative ratio (alert values, thresholds) as canonical decimal text with six
    significant digits: ``0.00123456`` → ``"0.00123456"``, never ``"1.23456e-03"``."""
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"not a non-negative finite ratio: {value!r}")
    text = format(Decimal(f"{value:.6g}"), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def divide_rounded(numerator: int, denominator: int) -> int:
    """``round(numerator / denominator)`` with banker's rounding, exactly, at any size.

    (Integer arithmetic: ``Decimal`` division would round to 28 digits first.)
    """
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    quotient, remainder = divmod(numerator, denominator)
    twice = 2 * remainder
    if twice > denominator or (twice == denominator and quotient % 2 == 1):
        quotient += 1
    return quotient


# --------------------------------------------------------------------------- normalization

_SYMBOL_STRIP = str.maketrans("", "", "-_/ ")


def normalize_symbol(symbol: str) -> str:
    """``btc-usdt`` / ``BTC/USDT`` / ``btc_usdt`` → ``BTCUSDT`` (upper case, no separators).

    For venue parsers and configuration; the result still has to pass :func:`name`.
    """
    return symbol.translate(_SYMBOL_STRIP).upper()


def message_key(venue: str, symbol: str) -> str:
    """The Kafka key of trades, bars and alerts: one symbol stays in one partition, in order."""
    return f"{venue}:{symbol}"
