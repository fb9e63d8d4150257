"""The notifier's pure parts: templates, escaping and size limits (checked by the Telegram markup
parsers of tests/platforms.py, an independent implementation), rate limits, configuration."""

from __future__ import annotations

import collections
import dataclasses
import random
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from candlewax import metrics
from candlewax.codec import Alert, UserEvent
from candlewax.errors import ConfigError
from candlewax.kafka import Connection
from candlewax.logs import SECRETS
from candlewax.settings import Settings
from sinks.notify import text
from sinks.notify.config import NotifyConfig
from sinks.notify.gateway import GatewayUser, UserEvents
from sinks.notify.notifier import Notifier
from sinks.notify.ratelimit import Rate, RateLimiter
from tests.platforms import parse_html, parse_markdownv2, sample_alerts, utf16_len

NASTY = "BTC-USD_[PERP]<b>&amp;*x*`1.5`|!{}#+=~>"

spans = st.lists(
    st.builds(
        text.Span,
        st.text(
            alphabet=st.sampled_from([*"ab <>&*_[]()~`#+-=|{}.!\\中文€", "😀", "\n"]),
            max_size=40,
        ),
        st.booleans(),
    ),
    min_size=1,
    max_size=6,
).map(tuple)


def plain(line: text.Line) -> str:
    return "".join(s.text for s in line)


@pytest.mark.parametrize(
    ("markup", "parse"),
    [(text.TELEGRAM_HTML, parse_html), (text.TELEGRAM_MARKDOWNV2, parse_markdownv2)],
)
@given(line=spans)
@settings(max_examples=300, deadline=None)
def test_telegram_escaping_shows_exactly_the_text(markup, parse, line) -> None:
    assert parse(text.render_line(line, markup)) == plain(line)


@pytest.mark.parametrize(
    ("markup", "parse", "limit"),
    [
        (text.TELEGRAM_HTML, parse_html, 60),
        (text.TELEGRAM_MARKDOWNV2, parse_markdownv2, 60),
        (text.TELEGRAM_HTML, parse_html, 4096),
    ],
)
@given(lines=st.lists(spans, min_size=1, max_size=30))
@settings(max_examples=200, deadline=None)
def test_pack_never_cuts_inside_markup_and_keeps_the_limit(markup, parse, limit, lines) -> None:
    messages = text.pack(lines, markup, limit)
    shown = [parse(m) for m in messages]  # parses: no cut inside a tag or an escape
    assert all(utf16_len(m) <= limit for m in messages)
    # Nothing lost or reordered except lines too long for a whole message, which end in "…".
    got = "\n".join(shown).split("\n")
    want = "\n".join(plain(line) for line in lines).split("\n")
    if all(utf16_len(text.render_line(line, markup)) <= limit for line in lines):
        assert got == want


@given(
    lines=st.lists(
        st.text(alphabet="中文字abc😀€", min_size=1, max_size=900), min_size=1, max_size=8
    )
)
@settings(max_examples=200, deadline=None)
def test_wecom_limits_are_bytes_cut_on_character_boundaries(lines) -> None:
    for markup, limit in ((text.WECOM_TEXT, 2048), (text.WECOM_MARKDOWN, 4096)):
        messages = text.pack([(text.Span(t),) for t in lines], markup)
        for m in messages:
            encoded = m.encode("utf-8")  # a cut inside a character would not round-trip
            assert len(encoded) <= limit
            assert encoded.decode("utf-8") == m


def test_a_line_longer_than_a_message_is_shortened_with_an_ellipsis() -> None:
    line = (text.Span("<" * 5000, bold=True),)
    (message,) = text.pack([line], text.TELEGRAM_HTML)
    assert utf16_len(message) <= 4096
    shown = parse_html(message)
    assert shown.endswith("…") and set(shown[:-1]) == {"<"}
    assert len(shown) > 800  # &lt; is 4 units each: it keeps as many as fit


def alert(**changes) -> Alert:
    return dataclasses.replace(sample_alerts(1)[0], **changes)


def test_english_and_chinese_templates() -> None:
    a = alert(rule="range", value="0.00412345", threshold="0.002", severity="critical")
    en = "\n".join(text.render([a], text.TELEGRAM_PLAIN, "en"))
    zh = "\n".join(text.render([a], text.TELEGRAM_PLAIN, "zh"))
    assert "CRITICAL · BTCUSDT 1m range 0.412% ≥ 0.2%" in en
    assert "price 61707.3" in en and a.id in en and "2024-08-08 23:58:01 UTC" in en
    assert "严重 · BTCUSDT 1分钟 振幅 0.412% ≥ 0.2%" in zh
    assert "价格 61707.3" in zh and "告警编号" in zh
    z = alert(rule="zscore", value="7.123", threshold="6", interval="5m")
    assert "z-score 7.12 ≥ 6" in text.render([z], text.TELEGRAM_PLAIN, "en")[0]
    assert "5分钟 异常波动(Z值) 7.12 ≥ 6" in text.render([z], text.TELEGRAM_PLAIN, "zh")[0]


@pytest.mark.parametrize("lang", ["en", "zh"])
@pytest.mark.parametrize(
    ("markup", "measure", "parse"),
    [
        (text.TELEGRAM_HTML, utf16_len, parse_html),
        (text.TELEGRAM_MARKDOWNV2, utf16_len, parse_markdownv2),
        (text.WECOM_MARKDOWN, lambda s: len(s.encode()), str),
        (text.WECOM_TEXT, lambda s: len(s.encode()), str),
    ],
)
def test_a_digest_is_one_message_that_counts_every_alert(lang, markup, measure, parse) -> None:
    alerts = sample_alerts(5000, symbols=tuple(f"S{i}{NASTY}" for i in range(40)))
    (message,) = text.render(alerts, markup, lang)
    assert measure(message) <= markup.limit
    shown = parse(message)
    critical = sum(a.severity == "critical" for a in alerts)
    if lang == "en":
        assert f"Digest: 5000 alerts ({critical} critical)" in shown
        shown_items = len(re.findall(r"^[🔴🟠] ", shown, re.M))
        (more,) = re.findall(r"… and (\d+) more", shown)
    else:
        assert f"告警汇总：5000 条（严重 {critical} 条）" in shown
        shown_items = len(re.findall(r"^[🔴🟠] ", shown, re.M))
        (more,) = re.findall(r"… 另有 (\d+) 条", shown)
    assert shown_items + int(more) == 5000
    by_rule = collections.Counter((a.interval, a.rule) for a in alerts)
    if lang == "en" and markup is text.TELEGRAM_HTML:
        for (interval, rule), n in by_rule.items():
            name = {"zscore": "z-score"}.get(rule, rule)
            assert f"{interval} {name} {n}" in shown
    # Critical first: the items shown are all critical when there are more of them than fit.
    assert "🟠" not in shown.split("\n", 4)[-1][:200]


def test_a_small_digest_lists_every_alert() -> None:
    alerts = sample_alerts(7)
    shown = parse_html(text.render(alerts, text.TELEGRAM_HTML, "en")[0])
    assert "Digest: 7 alerts" in shown and "more" not in shown
    assert len(re.findall(r"^[🔴🟠] ", shown, re.M)) == 7


# --------------------------------------------------------------------------- rate limits


def test_rate_parse() -> None:
    assert Rate.parse("20/60s") == Rate(20, 60.0)
    assert Rate.parse("1 / 500ms") == Rate(1, 0.5)
    assert Rate.parse("30/1") == Rate(30, 1.0)
    for bad in ("20", "0/1s", "1/0s", "x/1s", "30/s"):
        with pytest.raises(ConfigError, match="is not a rate"):
            Rate.parse(bad)


@given(
    seed=st.integers(0, 10_000),
    rates=st.lists(
        st.tuples(st.integers(1, 5), st.sampled_from([0.5, 1.0, 3.0])), min_size=1, max_size=2
    ),
    senders=st.integers(1, 3),
)
@settings(max_examples=150, deadline=None)
def test_limits_hold_on_the_platforms_clock_whatever_the_latency(seed, rates, senders) -> None:
    """Simulated time: several senders share a limiter; each request reaches the platform at a
    random moment between reservation and answer. Every window of arrivals stays in the limit."""
    rng = random.Random(seed)
    now = [0.0]
    limiter = RateLimiter([Rate(c, w) for c, w in rates], clock=lambda: now[0])
    events: list[tuple[float, str, int]] = [(0.0, "try", s) for s in range(senders)]
    arrivals: list[float] = []
    while len(arrivals) < 40:
        events.sort()
        t, what, who = events.pop(0)
        now[0] = t
        if what == "try":
            delay = limiter.try_reserve()
            if delay > 0:
                events.append((t + delay, "try", who))
            else:
                latency = rng.uniform(0, 0.8)
                arrivals.append(t + rng.uniform(0, latency))
                events.append((t + latency, "done", who))
        else:
            limiter.complete()
            events.append((t, "try", who))
    arrivals.sort()
    for count, window in rates:
        for i in range(len(arrivals) - count):
            assert arrivals[i + count] - arrivals[i] >= window - 1e-9


def test_limiter_lets_a_burst_through_then_spaces() -> None:
    now = [100.0]
    limiter = RateLimiter([Rate(3, 10.0)], clock=lambda: now[0])
    for _ in range(3):
        assert limiter.try_reserve() == 0.0
        limiter.complete()
    assert limiter.try_reserve() == pytest.approx(10.0)
    now[0] += 10.0
    assert limiter.try_reserve() == 0.0
    assert limiter.min_interval_s == pytest.approx(10 / 3)


# --------------------------------------------------------------------------- configuration


def parse(raw: dict, env: dict | None = None, **kw) -> NotifyConfig:
    """The notifier's destinations, through the one settings parser as a user's would go."""
    return NotifyConfig.build(Settings.load(env={}, notify=raw, **kw), env or {})


def test_channels_from_the_environment() -> None:
    cfg = parse(
        {},
        {
            "TELEGRAM_BOT_TOKEN": "123:SECRET",
            "TELEGRAM_CHAT_ID": "-1001,42",
            "WECOM_WEBHOOK_KEY": "k-9-robot-key",
        },
    )
    assert [d.key for d in cfg.destinations] == ["telegram:-1001", "telegram:42", "wecom"]
    group, private, wecom = cfg.destinations
    assert [str(r) for r in group.limiter.rates] == ["1/1s", "20/60s"]  # a group chat
    assert [str(r) for r in private.limiter.rates] == ["1/1s"]
    assert group.shared is private.shared and [str(r) for r in group.shared.rates] == ["30/1s"]
    assert [str(r) for r in wecom.limiter.rates] == ["20/60s"] and wecom.language == "zh"
    assert cfg.settings.start == "latest" and cfg.state_file == Path("data/notify.sqlite3")
    assert "SECRET" not in repr(cfg) and "k-9" not in repr(cfg) + "".join(cfg.describe())
    # Parsing registered both with the process's one redaction path.
    assert SECRETS.redact("token 123:SECRET and key k-9-robot-key") == "token *** and key ***"
    assert parse({}, {"TELEGRAM_BOT_TOKEN": "t"}).destinations == []  # no chat id: no channel


def test_secret_files(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("999:FROMFILE\n")
    (tmp_path / "key").write_text("wkey-from-file\n")
    cfg = parse(
        {
            "channels": {
                "tg": {"type": "telegram", "token_file": str(tmp_path / "tok"), "chat_ids": ["5"]}
            }
        },
        {"TELEGRAM_BOT_TOKEN": "ignored"},
    )
    assert [d._url.split("/")[-2] for d in cfg.destinations] == ["bot999:FROMFILE"]  # not the env
    assert SECRETS.redact("a 999:FROMFILE b") == "a *** b"
    cfg = parse({}, {"WECOM_WEBHOOK_KEY_FILE": str(tmp_path / "key")})
    assert [d._key for d in cfg.destinations] == ["wkey-from-file"]
    assert SECRETS.redact("k=wkey-from-file") == "k=***"
    with pytest.raises(ConfigError, match="cannot read the token file"):
        parse(
            {
                "channels": {
                    "tg": {"type": "telegram", "token_file": "/nonexistent", "chat_ids": "1"}
                }
            }
        )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"chanels": {}}, "unknown setting 'notify.chanels'"),
        ({"channels": {"x": {"type": "slack"}}}, "notify.channels.x.*'slack'.*'telegram', 'wecom'"),
        (
            {"channels": {"x": {"type": "telegram", "chat_ids": "1"}}},
            "no bot token; set TELEGRAM_BOT_TOKEN",
        ),
        ({"channels": {"x": {"type": "telegram", "token": "t"}}}, "no chat id"),
        ({"channels": {"x": {"type": "wecom"}}}, "no robot key; set WECOM_WEBHOOK_KEY"),
        (
            {"channels": {"x": {"type": "wecom", "key": "k", "fromat": "text"}}},
            "unknown setting 'notify.channels.x.fromat'",
        ),
        ({"channels": {"x": {"type": "webhook", "url": "ftp://x"}}}, "http"),
        ({"channels": {"x": {"type": "console", "rate": "fast"}}}, "is not a rate"),
        (
            {"channels": {"x": {"type": "console"}}, "routes": [{"channels": ["y"]}]},
            r"routes\[0\] names no channel \['y'\]; configured: \['x'\]",
        ),
        (
            {
                "channels": {"x": {"type": "console"}},
                "routes": [{"channels": ["x"], "rules": ["rnage"]}],
            },
            "notify.routes.0.rules.0.*'range', 'move' or 'zscore' .got 'rnage'",
        ),
        (
            {
                "channels": {"x": {"type": "console"}},
                "routes": [{"channels": ["x"], "min_severity": "info"}],
            },
            "notify.routes.0.min_severity.*'warning' or 'critical' .got 'info'",
        ),
        (
            {"channels": {"x": {"type": "gateway", "user": "desk 1"}}},
            r"notify.channels.x.gateway.user.*not a gateway user id",
        ),
        ({"channels": {"x": {"type": "gateway", "user": "d" * 65}}}, "not a gateway user id"),
        ({"channels": {"x": {"type": "gateway"}}}, "notify.channels.x.gateway.user.*required"),
        (
            {"channels": {"x": {"type": "gateway", "user": "a", "chat_ids": ["1"]}}},
            "unknown setting 'notify.channels.x.gateway.chat_ids'",
        ),
        ({"max_delay_s": 0}, "notify.max_delay_s.*greater than 0"),
        ({"start": "now"}, "notify.start.*'latest' or 'earliest' .got 'now'"),
    ],
)
def test_bad_config_is_a_clear_error(raw, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(raw)


def test_routes_are_a_union_of_matches() -> None:
    cfg = parse(
        {
            "channels": {
                "a": {"type": "console"},
                "b": {"type": "console"},
                "c": {"type": "console"},
            },
            "routes": [
                {"channels": ["a"], "rules": ["range"], "symbols": ["btcusdt"]},
                {"channels": ["b"], "min_severity": "critical"},
                {"channels": ["c"], "intervals": ["5m"], "venues": ["okx"]},
            ],
        }
    )
    names = lambda a: [d.channel for d in cfg.route(a)]  # noqa: E731
    assert names(alert(rule="range", symbol="BTCUSDT", severity="warning")) == ["a"]
    assert names(alert(rule="range", symbol="BTCUSDT", severity="critical")) == ["a", "b"]
    assert names(alert(rule="move", symbol="ETHUSDT", severity="warning")) == []
    assert names(alert(rule="move", interval="5m", venue="okx", severity="critical")) == ["b", "c"]
    assert [d.channel for d in parse({"channels": {"a": {"type": "console"}}}).route(alert())] == [
        "a"
    ]


def test_settings_take_notify_from_toml_and_env_and_never_print_secrets(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[candlewax.notify.channels.tg]\ntype = "telegram"\ntoken = "123:SECRET"\nchat_ids = ["1"]\n'
        '[candlewax.notify.channels.hook]\ntype = "webhook"\nurl = "https://h/x?sig=SECRET2"\n'
    )
    s = Settings.load(path, env={"CANDLEWAX_TELEGRAM_API_URL": "http://127.0.0.1:1"})
    assert s.notify.channels["tg"].token.get_secret_value() == "123:SECRET"
    assert s.telegram_api_url == "http://127.0.0.1:1"
    assert "SECRET" not in repr(s)
    s = Settings.load(env={"CANDLEWAX_NOTIFY": '{"max_delay_s": 3}'})
    assert s.notify.max_delay_s == 3 and s.notify.channels is None
    with pytest.raises(ConfigError, match="notify"):
        Settings.load(env={"CANDLEWAX_NOTIFY": "[1]"})


# --------------------------------------------------------------------------- gateway users


def test_gateway_channels_are_routed_like_any_other_and_share_one_producer(
    tmp_path: Path,
) -> None:
    cfg = parse(
        {
            "channels": {
                "desk": {"type": "gateway", "user": "desk-1"},
                "ops": {"type": "gateway", "user": "ops.team_2", "rate": "5/1s"},
                "log": {"type": "console"},
            },
            "routes": [
                {"channels": ["log"]},
                {"channels": ["desk"], "rules": ["range"]},
                {"channels": ["ops"], "min_severity": "critical"},
            ],
            "state_file": str(tmp_path / "n.sqlite3"),
        },
    )
    desk, ops, _log = cfg.destinations
    assert isinstance(desk, GatewayUser) and isinstance(ops, GatewayUser)
    assert (desk.key, desk.user, ops.user) == ("desk", "desk-1", "ops.team_2")
    # The notifier that runs them connects them to one user_events producer, of its Kafka.
    notifier = Notifier(Settings(bootstrap_servers="127.0.0.1:1", topic_prefix="q.", data_dir=tmp_path), cfg)  # fmt: skip
    try:
        assert notifier.user_events is not None and notifier.user_events.topic == "q.user_events"
        assert desk.events is ops.events is notifier.user_events
    finally:
        notifier.store.close()
    assert [str(r) for r in desk.limiter.rates] == ["50/1s"]
    assert [str(r) for r in ops.limiter.rates] == ["5/1s"]
    names = lambda a: [d.channel for d in cfg.route(a)]  # noqa: E731
    assert names(alert(rule="range", severity="warning")) == ["desk", "log"]
    assert names(alert(rule="move", severity="critical")) == ["ops", "log"]
    assert "gateway desk" in cfg.describe()[0]
    # Without a gateway channel, no user_events producer exists at all.
    plain = parse({"channels": {"log": {"type": "console"}}})
    assert not any(isinstance(d, GatewayUser) for d in plain.destinations)


def test_a_gateway_batch_is_every_alert_as_its_own_event() -> None:
    alerts = sample_alerts(1200)
    dest = GatewayUser("desk", "desk-1", RateLimiter([]))
    payloads = dest.payloads(alerts)
    assert [len(p.body["alerts"]) for p in payloads] == [500, 500, 200]
    assert [a for p in payloads for a in p.body["alerts"]] == alerts


def test_outcomes_never_wait_for_an_unreachable_broker_and_failures_are_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No broker at all: publish returns at once, every lost record is counted, one warning is
    logged for the change to failing (not one per record); a send of alert events answers
    with the failure (a retry for the notifier) once Kafka gives up, within its timeout."""
    events = UserEvents(Connection("127.0.0.1:1", {"message.timeout.ms": "300"}), "user_events", 0.1)  # fmt: skip
    errors = metrics.NOTIFY_USER_EVENTS.labels("delivery", "error")
    before = errors._value.get()
    event = UserEvent.of_delivery("desk-1", "5fddbb49fd7eb91198225183", "tg:7", "delivered", "", 1723161351000)  # fmt: skip
    try:
        start = time.monotonic()
        for _ in range(20):
            events.publish(event)
        assert time.monotonic() - start < 0.5
        deadline = time.monotonic() + 10
        while events.failed < 20 and time.monotonic() < deadline:
            events.poll()
            time.sleep(0.02)
        assert events.failed == 20 and events.published == 0
        assert errors._value.get() - before == 20
        warnings = [r for r in caplog.records if "delivery outcomes to user_events are failing" in r.getMessage()]  # fmt: skip
        assert len(warnings) == 1
        start = time.monotonic()
        problem = events.send([UserEvent.of_alert("desk-1", sample_alerts(1)[0], 1723161351000)])
        assert problem is not None and "not delivered" in problem
        assert time.monotonic() - start < 5
    finally:
        events.close(1.0)
