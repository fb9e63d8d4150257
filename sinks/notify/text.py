"""Alert messages: English and Chinese templates, each platform's markup, and size limits.

A message is built from *lines* of *spans* (plain text, maybe bold). Escaping happens per span
when a line is rendered, and anything too long is cut in the plain text *before* escaping, so a
message can never end inside an escape sequence or a tag — the way Alertmanager's truncated
Telegram HTML breaks (alertmanager #2923) cannot happen here. Lines are only ever split between
lines; one line that is longer than a whole message is shortened with "…".

Limits are counted the way each platform counts: Telegram in UTF-16 code units of the text as
sent (≥ its count after entity parsing, so always safe), WeCom in UTF-8 bytes.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from candlewax.codec import Alert


@dataclass(frozen=True, slots=True)
class Span:
    text: str
    bold: bool = False


Line = tuple[Span, ...]


def utf16_len(text: str) -> int:
    """Telegram's length: UTF-16 code units (an emoji outside the BMP counts 2)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def utf8_len(text: str) -> int:
    """WeCom's length: UTF-8 bytes (a Chinese character counts 3)."""
    return len(text.encode("utf-8"))


@dataclass(frozen=True)
class Markup:
    """How one platform format writes text: escaping, bold, how length is measured, the limit."""

    name: str
    limit: int
    measure: Callable[[str], int]
    escape: Callable[[str], str]
    bold: Callable[[str], str]


_MDV2_SPECIAL = frozenset("_*[]()~`>#+-=|{}.!\\")
_WECOM_MD = str.maketrans(
    {"*": "＊", "_": "＿", "`": "｀", "<": "＜", ">": "＞", "[": "［", "]": "］"}
)


def _escape_html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_mdv2(text: str) -> str:
    return "".join("\\" + ch if ch in _MDV2_SPECIAL else ch for ch in text)


def _same(text: str) -> str:
    return text


TELEGRAM_HTML = Markup("HTML", 4096, utf16_len, _escape_html, lambda s: f"<b>{s}</b>")
TELEGRAM_MARKDOWNV2 = Markup("MarkdownV2", 4096, utf16_len, _escape_mdv2, lambda s: f"*{s}*")
TELEGRAM_PLAIN = Markup("plain", 4096, utf16_len, _same, _same)
#: WeCom markdown has no escape syntax: markup characters in data become their full-width forms.
WECOM_MARKDOWN = Markup(
    "markdown", 4096, utf8_len, lambda s: s.translate(_WECOM_MD), lambda s: f"**{s}**"
)
WECOM_TEXT = Markup("text", 2048, utf8_len, _same, _same)


def render_line(line: Line, markup: Markup) -> str:
    return "".join(
        markup.bold(markup.escape(s.text)) if s.bold else markup.escape(s.text) for s in line
    )


def _cut(line: Line, keep: int) -> Line:
    """The first ``keep`` characters of the line's plain text, then "…"."""
    out: list[Span] = []
    for span in line:
        if keep <= 0:
            break
        out.append(Span(span.text[:keep], span.bold))
        keep -= len(span.text)
    return (*out, Span("…"))


def fit_line(line: Line, markup: Markup, limit: int | None = None) -> str:
    """The line rendered, shortened on a character boundary of its plain text if it is too long."""
    limit = markup.limit if limit is None else limit
    rendered = render_line(line, markup)
    if markup.measure(rendered) <= limit:
        return rendered
    lo, hi = 0, sum(len(s.text) for s in line)  # longest plain prefix that fits: binary search
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if markup.measure(render_line(_cut(line, mid), markup)) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return render_line(_cut(line, lo), markup)


def pack(lines: Sequence[Line], markup: Markup, limit: int | None = None) -> list[str]:
    """Lines joined into as few messages as possible, each within the limit, split between lines."""
    limit = markup.limit if limit is None else limit
    messages: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        rendered = fit_line(line, markup, limit)
        n = markup.measure(rendered)
        extra = n + (1 if current else 0)
        if current and size + extra > limit:
            messages.append("\n".join(current))
            current, size, extra = [], 0, n
        current.append(rendered)
        size += extra
    if current:
        messages.append("\n".join(current))
    return messages


def summarize(
    head: Sequence[Line],
    items: Sequence[Line],
    more: Callable[[int], Line],
    markup: Markup,
    limit: int | None = None,
) -> str:
    """One message: the head, as many items as fit, and ``more(n)`` for the n left out."""
    limit = markup.limit if limit is None else limit
    parts = [fit_line(line, markup, limit) for line in head]
    size = sum(markup.measure(p) for p in parts) + max(0, len(parts) - 1)
    if size > limit:  # a head longer than a message: keep what fits, line by line
        return pack(head, markup, limit)[0]
    reserve = markup.measure(fit_line(more(len(items)), markup, limit)) + 1
    for i, line in enumerate(items):
        rendered = fit_line(line, markup, limit)
        n = markup.measure(rendered) + 1
        last = i == len(items) - 1
        if size + n + (0 if last else reserve) > limit:
            parts.append(fit_line(more(len(items) - i), markup, limit))
            break
        parts.append(rendered)
        size += n
    return "\n".join(parts)


# --------------------------------------------------------------------------- templates

_SEVERITY = {
    "en": {"critical": "CRITICAL", "warning": "WARNING"},
    "zh": {"critical": "严重", "warning": "警告"},
}
_ICON = {"critical": "🔴", "warning": "🟠"}
_RULE = {
    "en": {"range": "range", "move": "move", "zscore": "z-score"},
    "zh": {"range": "振幅", "move": "涨跌幅", "zscore": "异常波动(Z值)"},
}
_INTERVAL_ZH = {"1m": "1分钟", "5m": "5分钟", "15m": "15分钟", "30m": "30分钟", "1h": "1小时"}


def _interval(interval: str, lang: str) -> str:
    return _INTERVAL_ZH.get(interval, interval) if lang == "zh" else interval


def _number(text: str) -> str:
    """``61707.30000000`` → ``61707.3`` (never exponent notation)."""
    try:
        d = Decimal(text)
    except InvalidOperation:
        return text
    out = format(d, "f")
    return out.rstrip("0").rstrip(".") if "." in out else out


def _ratio(alert: Alert, value: str) -> str:
    if alert.rule == "zscore":
        return _number(str(round(Decimal(value), 2))) if _is_number(value) else value
    if not _is_number(value):
        return value
    return f"{_number(str(round(Decimal(value) * 100, 3)))}%"


def _is_number(text: str) -> bool:
    try:
        return Decimal(text).is_finite()
    except InvalidOperation:
        return False


def _time(ts_ms: int, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime(fmt)


def _rule(alert: Alert, lang: str) -> str:
    return _RULE[lang].get(alert.rule, alert.rule)


def alert_lines(alert: Alert, lang: str = "en") -> list[Line]:
    """One alert as a message."""
    value, threshold = _ratio(alert, alert.value), _ratio(alert, alert.threshold)
    severity = _SEVERITY[lang].get(alert.severity, alert.severity)
    title = Span(
        f"{_ICON.get(alert.severity, '⚪')} {severity} · {alert.symbol} "
        f"{_interval(alert.interval, lang)} {_rule(alert, lang)} {value} ≥ {threshold}",
        bold=True,
    )
    when = _time(alert.ts_ms)
    if lang == "zh":
        detail = f"交易所 {alert.venue} · 价格 {_number(alert.price)} · 时间 {when} UTC"
        ref = f"告警编号 {alert.id}"
    else:
        detail = f"{alert.venue} · price {_number(alert.price)} · {when} UTC"
        ref = f"id {alert.id}"
    return [(title,), (Span(detail),), (Span(ref),)]


def digest_item(alert: Alert, lang: str = "en") -> Line:
    """One alert as one line of a digest."""
    return (
        Span(
            f"{_ICON.get(alert.severity, '⚪')} {alert.symbol} {_interval(alert.interval, lang)} "
            f"{_rule(alert, lang)} {_ratio(alert, alert.value)} @ {_number(alert.price)} "
            f"{_time(alert.ts_ms, '%H:%M:%S')}"
        ),
    )


def digest_head(alerts: Sequence[Alert], lang: str = "en") -> list[Line]:
    """The summary that opens a digest: counts by severity, rule and symbol, the time span."""
    n = len(alerts)
    critical = sum(1 for a in alerts if a.severity == "critical")
    first = _time(min(a.ts_ms for a in alerts), "%m-%d %H:%M:%S")
    last = _time(max(a.ts_ms for a in alerts), "%m-%d %H:%M:%S")
    by_rule = collections.Counter((a.interval, a.rule) for a in alerts)
    rules = " · ".join(
        f"{_interval(i, lang)} {_RULE[lang].get(r, r)} {c}" for (i, r), c in by_rule.most_common()
    )
    by_symbol = collections.Counter(a.symbol for a in alerts)
    top = " · ".join(f"{s} {c}" for s, c in by_symbol.most_common(8))
    if lang == "zh":
        return [
            (Span(f"⚠️ 告警汇总：{n} 条（严重 {critical} 条）", bold=True),),
            (Span(f"时间 {first} – {last} UTC"),),
            (Span(f"按规则：{rules}"),),
            (Span(f"品种 {len(by_symbol)} 个：{top}"),),
        ]
    return [
        (Span(f"⚠️ Digest: {n} alerts ({critical} critical)", bold=True),),
        (Span(f"{first} – {last} UTC"),),
        (Span(f"by rule: {rules}"),),
        (Span(f"{len(by_symbol)} symbols: {top}"),),
    ]


def digest_more(n: int, lang: str = "en") -> Line:
    return (Span(f"… 另有 {n} 条" if lang == "zh" else f"… and {n} more"),)


def digest_order(alerts: Sequence[Alert]) -> list[Alert]:
    """Critical first, then the newest first: what a reader of a cut-off digest should see."""
    return sorted(alerts, key=lambda a: (a.severity != "critical", -a.ts_ms, a.id))


def render(
    alerts: Sequence[Alert], markup: Markup, lang: str = "en", limit: int | None = None
) -> list[str]:
    """The messages for one alert (split between lines if needed) or one digest (one message),
    each within ``limit`` (default: the markup's; less when the caller appends something)."""
    if len(alerts) == 1:
        return pack(alert_lines(alerts[0], lang), markup, limit)
    items = [digest_item(a, lang) for a in digest_order(alerts)]
    more = lambda k: digest_more(k, lang)  # noqa: E731
    return [summarize(digest_head(alerts, lang), items, more, markup, limit)]
