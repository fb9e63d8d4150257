"""The notifier against the embedded broker and local servers that enforce each platform's rules
(tests/platforms.py): every alert delivered once, no limit broken, failures handled as the
platforms require, nothing resent after a restart, storms folded into a few digests."""

from __future__ import annotations

import collections
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from candlewax.codec import Alert, DeadLetter, UserEvent
from candlewax.kafka import TrackedProducer
from candlewax.settings import Settings
from candlewax.topics import ALERTS, DEADLETTER, USER_EVENTS
from sinks.notify.config import NotifyConfig
from sinks.notify.notifier import Notifier
from sinks.notify.store import DeliveredStore
from tests.kafka_read import read_topic
from tests.platforms import TelegramServer, WebhookServer, WeComServer, sample_alerts

pytestmark = pytest.mark.integration
TOKEN = "123456:TEST-token-never-logged"
KEY = "wecom-key-never-logged"
#: Valid symbols whose characters MarkdownV2 must escape ("." and, in text, ":").
NASTY = ("BINANCE:BTCUSDT", "BRK.B", "X.Y:Z.1", "ETHUSDT")


def publish(settings: Settings, alerts: list[Alert], extra: list[bytes] = ()) -> None:
    producer = TrackedProducer(settings.connection)
    for a in alerts:
        producer.send(settings.topic(ALERTS), a.encode(), f"{a.venue}:{a.symbol}".encode())
    for raw in extra:
        producer.send(settings.topic(ALERTS), raw, b"x")
    producer.flush()


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def running(settings: Settings, config: NotifyConfig) -> Iterator[Notifier]:
    notifier = Notifier(settings, config)
    stop = threading.Event()
    errors: list[BaseException] = []

    def target() -> None:
        try:
            notifier.run(stop)
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    try:
        yield notifier
    finally:
        stop.set()
        thread.join(60)
        assert not thread.is_alive(), "the notifier did not stop"
    if errors:
        raise errors[0]


def committed(settings: Settings, group: str) -> dict[int, int]:
    topic = settings.topic(ALERTS)
    consumer = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": group})
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        got = consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in got if tp.offset >= 0}  # empty: none
    finally:
        consumer.close()


def end_offsets(settings: Settings) -> dict[int, int]:
    ends: dict[int, int] = collections.defaultdict(int)
    for partition, offset, _, _ in read_topic(settings.bootstrap_servers, settings.topic(ALERTS)):
        ends[partition] = max(ends[partition], offset + 1)
    return dict(ends)


def config(
    tmp_path: Path,
    channels: dict[str, Any],
    routes: list[dict[str, Any]] | None = None,
    telegram: str = "",
    wecom: str = "",
    **top: Any,
) -> NotifyConfig:
    raw: dict[str, Any] = {
        "channels": channels,
        "start": "earliest",
        "group_id": "notify-test",
        "state_file": str(tmp_path / "notify.sqlite3"),
        **top,
    }
    if routes:
        raw["routes"] = routes
    urls = {k: v for k, v in {"telegram_api_url": telegram, "wecom_api_url": wecom}.items() if v}
    return NotifyConfig.build(Settings.load(env={}, notify=raw, **urls), {})


def ids_in(messages: list[dict[str, Any]], field: str, label: str) -> list[str]:
    return [i for m in messages for i in re.findall(rf"{label} ([0-9a-f]{{24}})", m[field])]


def digest_total(messages: list[dict[str, Any]], field: str, pattern: str, label: str) -> int:
    total = 0
    for m in messages:
        found = re.findall(pattern, m[field])
        total += int(found[0]) if found else len(re.findall(rf"{label} [0-9a-f]{{24}}", m[field]))
    return total


def test_routes_deliver_every_alert_once_within_the_limits(
    settings: Settings, tmp_path: Path
) -> None:
    alerts = sample_alerts(24, symbols=NASTY)
    tg = TelegramServer(TOKEN, chat_rate=(1, 0.1), group_rate=(5, 1.0), bot_rate=(30, 1.0))
    wecom = WeComServer(KEY, rate=(5, 1.0))
    hook = WebhookServer(secret="hmac-secret")
    with tg, wecom, hook:
        cfg = config(
            tmp_path,
            {
                "tg_html": {
                    "type": "telegram",
                    "token": TOKEN,
                    "chat_ids": ["-100200"],
                    "rate": ["1/0.1s", "5/1s"],
                },
                "tg_md": {
                    "type": "telegram",
                    "token": TOKEN,
                    "chat_ids": ["42"],
                    "parse_mode": "MarkdownV2",
                    "rate": "1/0.1s",
                },
                "wecom": {
                    "type": "wecom",
                    "key": KEY,
                    "language": "zh",
                    "rate": "5/1s",
                    "mentioned_list": ["alice"],
                },
                "hook": {"type": "webhook", "url": hook.url + "/alerts", "secret": "hmac-secret"},
            },
            routes=[
                {"channels": ["tg_html"], "rules": ["range"]},
                {"channels": ["tg_md"], "symbols": ["BRK.B", "X.Y:Z.1"]},
                {"channels": ["wecom"], "min_severity": "critical"},
                {"channels": ["hook"]},
            ],
            telegram=tg.url,
            wecom=wecom.url,
            max_delay_s=1000,  # no digests here: every alert is its own message
        )
        publish(settings, alerts)
        by_id = {a.id: a for a in alerts}
        want_html = sorted(a.id for a in alerts if a.rule == "range")
        want_md = sorted(a.id for a in alerts if a.symbol in ("BRK.B", "X.Y:Z.1"))
        want_wecom = sorted(a.id for a in alerts if a.severity == "critical")
        with running(settings, cfg) as notifier:
            wait_for(
                lambda: (
                    len(tg.messages) == len(want_html) + len(want_md)
                    and len(wecom.messages) == len(want_wecom)
                    and len(hook.bodies) == len(alerts)
                ),
                60,
                "every routed alert",
            )
            wait_for(
                lambda: committed(settings, "notify-test") == end_offsets(settings), 30, "commit"
            )
        assert tg.violations == wecom.violations == hook.violations == []
        html = [m for m in tg.messages if m["chat_id"] == "-100200"]
        md = [m for m in tg.messages if m["chat_id"] == "42"]
        assert sorted(ids_in(html, "text", "id")) == want_html
        assert sorted(ids_in(md, "text", "id")) == want_md
        assert {m["mode"] for m in html} == {"HTML"} and {m["mode"] for m in md} == {"MarkdownV2"}
        for m in html + md:  # the symbol, with its markup characters, shows as it is
            (alert_id,) = ids_in([m], "text", "id")
            assert f"{by_id[alert_id].symbol} " in m["text"]
        assert sorted(ids_in(wecom.messages, "content", "告警编号")) == want_wecom
        assert all(
            m["msgtype"] == "markdown" and "<@alice>" in m["content"] for m in wecom.messages
        )
        assert all("严重" in m["content"] for m in wecom.messages)
        assert sorted(hook.alert_ids()) == sorted(by_id)
        assert all(b["_id"] == b["alert"]["id"] for b in hook.bodies)
        assert notifier.stats["delivered"] == len(want_html) + len(want_md) + len(want_wecom) + 24
        store = DeliveredStore(tmp_path / "notify.sqlite3")
        assert store.count("hook") == 24 and store.count("wecom") == len(want_wecom)


def test_platform_failures_are_handled_as_each_platform_requires(
    settings: Settings, tmp_path: Path
) -> None:
    alerts = sample_alerts(12)
    tg = TelegramServer(TOKEN, chat_rate=(1, 0.05), forbidden_chats=("-666",))
    wecom = WeComServer(KEY, rate=(5, 1.0))
    with tg, wecom:
        tg.force(
            tg.answer(
                429,
                {
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests: retry after 1",
                    "parameters": {"retry_after": 1},
                },
            ),
            tg.answer(502, {"ok": False, "error_code": 502, "description": "Bad Gateway"}),
            tg.hang(3.0),
            tg.answer(
                400,
                {
                    "ok": False,
                    "error_code": 400,
                    "description": "Bad Request: can't parse entities: Unsupported start tag",
                },
            ),
            when=lambda q, body: orjson.loads(body)["chat_id"] == "7",
        )
        wecom.force(
            wecom.answer(200, {"errcode": 45009, "errmsg": "api freq out of limit"}),
            wecom.answer(200, {"errcode": -1, "errmsg": "system busy"}),
            wecom.answer(503, {}),
            when=lambda q, body: q.get("key") == KEY,
        )
        cfg = config(
            tmp_path,
            {
                "tg": {"type": "telegram", "token": TOKEN, "chat_ids": ["7"], "rate": "1/0.05s"},
                "kicked": {
                    "type": "telegram",
                    "token": TOKEN,
                    "chat_ids": ["-666"],
                    "rate": "1/0.05s",
                },
                "wecom": {"type": "wecom", "key": KEY, "format": "text", "rate": "5/1s"},
                "badkey": {"type": "wecom", "key": "wrong-key", "rate": "50/1s"},
            },
            routes=[
                {"channels": ["tg", "wecom"]},
                {"channels": ["kicked", "badkey"], "rules": ["move"]},
            ],
            telegram=tg.url,
            wecom=wecom.url,
            max_delay_s=1000,
            timeout_s=0.5,
        )
        publish(settings, alerts, extra=[b"{not json", b'{"v":1,"id":"x"}'])
        moves = sorted(a.id for a in alerts if a.rule == "move")
        with running(settings, cfg):
            wait_for(
                lambda: len(tg.messages) == 12 and len(wecom.messages) == 12,
                60,
                "delivery despite the failures",
            )
            wait_for(
                lambda: committed(settings, "notify-test") == end_offsets(settings), 30, "commit"
            )
        assert tg.violations == wecom.violations == []
        assert sorted(ids_in(tg.messages, "text", "id")) == sorted(a.id for a in alerts)
        assert sorted(ids_in(wecom.messages, "content", "id")) == sorted(a.id for a in alerts)
        # 429: the next request to that chat came only after retry_after, then the same message.
        chat7 = [r for r in tg.requests if r.get("chat_id") == "7" or r.get("forced")]
        (i429,) = [i for i, r in enumerate(chat7) if r.get("forced") == 429]
        assert chat7[i429 + 1]["t"] - chat7[i429]["t"] >= 1.0
        # The markup error was retried once as plain text, and delivered.
        assert [m["mode"] for m in tg.messages].count(None) == 1
        # 403 and 93000: one request per alert, no retries, then dead-lettered with the reason.
        kicked = [r for r in tg.requests if r.get("chat_id") == "-666"]
        assert len(kicked) == len(moves)
        bad_key = [r for r in wecom.requests if not r.get("forced")]
        assert len(bad_key) == 12 + len(moves)  # 12 accepted on the good key, 1 per move on the bad
        letters = [
            DeadLetter.decode(v)
            for *_, v in read_topic(settings.bootstrap_servers, settings.topic(DEADLETTER))
        ]
        rejected = collections.defaultdict(list)
        for letter in letters:
            if letter.reason == "notify_rejected":
                rejected[letter.source["destination"]].append(Alert.decode(letter.raw).id)
        assert sorted(rejected["kicked:-666"]) == moves
        assert sorted(rejected["badkey"]) == moves
        assert any("http_403" in lt.detail for lt in letters)
        assert any("errcode_93000" in lt.detail for lt in letters)
        unreadable = sorted(lt.reason for lt in letters if lt.reason not in ("notify_rejected",))
        assert unreadable == ["json", "missing_field"]


def test_a_restart_never_resends(settings: Settings, tmp_path: Path) -> None:
    alerts = sample_alerts(40)
    tg = TelegramServer(TOKEN, chat_rate=(1, 0.05))
    hook = WebhookServer()
    with tg, hook:
        cfg = lambda group: config(  # noqa: E731
            tmp_path,
            {
                "tg": {"type": "telegram", "token": TOKEN, "chat_ids": ["7"], "rate": "1/0.05s"},
                "hook": {"type": "webhook", "url": hook.url, "rate": "1/0.05s"},
            },
            telegram=tg.url,
            max_delay_s=1000,
            group_id=group,
        )
        publish(settings, alerts)
        with running(settings, cfg("g1")):
            wait_for(lambda: len(tg.messages) >= 15, 60, "some deliveries")
        first = len(tg.messages)
        assert first < 40
        with running(settings, cfg("g1")):
            wait_for(lambda: len(tg.messages) == 40 and len(hook.bodies) == 40, 60, "the rest")
            wait_for(lambda: committed(settings, "g1") == end_offsets(settings), 30, "commit")
        # A new group reads every alert again: the store knows all of them were delivered.
        with running(settings, cfg("g2")) as again:
            wait_for(lambda: committed(settings, "g2") == end_offsets(settings), 30, "commit")
            assert again.stats["duplicate"] == 80
        ids = ids_in(tg.messages, "text", "id")
        assert len(ids) == len(set(ids)) == 40
        assert sorted(hook.alert_ids()) == sorted(a.id for a in alerts)
        assert tg.violations == hook.violations == []


def test_a_20000_alert_storm_ends_as_a_few_digests(settings: Settings, tmp_path: Path) -> None:
    """Real platform limits (Telegram group 1/s and 20/min, WeCom 20/min): the queue folds into
    digests instead of falling hours behind; every alert is counted in exactly one message."""
    alerts = sample_alerts(20_000, symbols=tuple(f"SYM{i}USDT" for i in range(300)))
    tg = TelegramServer(TOKEN, chat_rate=(1, 1.0), group_rate=(20, 60.0), bot_rate=(30, 1.0))
    wecom = WeComServer(KEY, rate=(20, 60.0))
    hook = WebhookServer()
    with tg, wecom, hook:
        cfg = config(
            tmp_path,
            {
                "tg": {"type": "telegram", "token": TOKEN, "chat_ids": ["-100999"]},
                "wecom": {"type": "wecom", "key": KEY, "language": "zh"},
                "hook": {"type": "webhook", "url": hook.url},
            },
            telegram=tg.url,
            wecom=wecom.url,
        )
        publish(settings, alerts)
        tg_total = lambda: digest_total(tg.messages, "text", r"Digest: (\d+) alerts", "id")  # noqa: E731
        wecom_total = lambda: digest_total(  # noqa: E731
            wecom.messages, "content", r"告警汇总：(\d+) 条", "告警编号"
        )
        with running(settings, cfg) as notifier:
            wait_for(
                lambda: (
                    tg_total() == 20_000
                    and wecom_total() == 20_000
                    and len(hook.alert_ids()) == 20_000
                ),
                120,
                "the storm to be delivered",
            )
            wait_for(
                lambda: committed(settings, "notify-test") == end_offsets(settings), 30, "commit"
            )
            assert notifier.pending() == 0
        assert tg.violations == wecom.violations == hook.violations == []
        assert len(tg.messages) <= 20 and len(wecom.messages) <= 20
        assert any("Digest: " in m["text"] for m in tg.messages)
        assert sorted(hook.alert_ids()) == sorted(a.id for a in alerts)
        assert len(hook.bodies) <= 100
        store = DeliveredStore(tmp_path / "notify.sqlite3")
        assert store.count("tg:-100999") == store.count("wecom") == store.count("hook") == 20_000
        print(
            f"storm: telegram {len(tg.messages)} messages, wecom {len(wecom.messages)}, "
            f"webhook {len(hook.bodies)} requests"
        )


def test_a_long_outage_pauses_consumption_then_delivers_everything(
    settings: Settings, tmp_path: Path
) -> None:
    alerts = sample_alerts(30)
    hook = WebhookServer()
    with hook:
        down = [hook.answer(503, {"error": "maintenance"}) for _ in range(10_000)]
        hook.force(*down)
        cfg = config(
            tmp_path,
            {"hook": {"type": "webhook", "url": hook.url, "rate": "50/1s"}},
            max_pending=5,
        )
        publish(settings, alerts)
        with running(settings, cfg) as notifier:
            wait_for(lambda: notifier._paused, 30, "the consumer to pause")
            wait_for(
                lambda: any(r.get("forced") == 503 for r in hook.requests), 30, "a failed send"
            )
            assert hook.bodies == []
            with hook.lock:
                hook.script.clear()  # the endpoint is back
            wait_for(lambda: len(hook.alert_ids()) == 30, 60, "delivery after the outage")
            wait_for(lambda: not notifier._paused, 30, "the consumer to resume")
            wait_for(
                lambda: committed(settings, "notify-test") == end_offsets(settings), 30, "commit"
            )
        assert sorted(hook.alert_ids()) == sorted(a.id for a in alerts)
        assert len([r for r in hook.requests if r.get("forced") == 503]) >= 1  # it did retry


def test_a_group_migrated_to_a_supergroup_is_followed(settings: Settings, tmp_path: Path) -> None:
    """Telegram answers 400 with parameters.migrate_to_chat_id when a group became a supergroup:
    the message goes to the new chat, and so do the ones after it."""
    alerts = sample_alerts(3)
    tg = TelegramServer(TOKEN, chat_rate=(1, 0.05), group_rate=(20, 1.0))
    with tg:
        old_group = lambda q, body: orjson.loads(body)["chat_id"] == "-100111"  # noqa: E731
        tg.force(
            *[
                tg.answer(
                    400,
                    {
                        "ok": False,
                        "error_code": 400,
                        "description": "Bad Request: group chat was upgraded to a supergroup chat",
                        "parameters": {"migrate_to_chat_id": -100222},
                    },
                )
                for _ in range(10)
            ],
            when=old_group,
        )
        cfg = config(
            tmp_path,
            {
                "tg": {
                    "type": "telegram",
                    "token": TOKEN,
                    "chat_ids": ["-100111"],
                    "rate": "1/0.05s",
                }
            },
            telegram=tg.url,
            max_delay_s=1000,
        )
        publish(settings, alerts)
        with running(settings, cfg):
            wait_for(lambda: len(tg.messages) == 3, 30, "delivery to the new chat")
        assert {m["chat_id"] for m in tg.messages} == {"-100222"}
        assert sorted(ids_in(tg.messages, "text", "id")) == sorted(a.id for a in alerts)
        assert len([r for r in tg.requests if r.get("forced") == 400]) == 1  # then the new id


def test_a_bad_alert_or_a_failing_destination_stops_no_destination(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An alert with "ts_ms": "x" between good ones used to pass decode and then kill the
    Telegram and WeCom workers (0 later alerts delivered). Now it is dead-lettered when read;
    and a destination whose rendering raises (a bug, simulated for one alert) dead-letters that
    alert as notify_error and delivers the rest. Every good alert reaches every destination once,
    and the offsets are all committed."""
    from sinks.notify import text

    alerts = sample_alerts(12)
    bad_ts = orjson.dumps({**orjson.loads(alerts[0].encode()), "ts_ms": "x"})
    unlucky = alerts[5]
    real_render = text.render

    def render(batch, *args, **kwargs):  # type: ignore[no-untyped-def]
        if any(a.id == unlucky.id for a in batch):
            raise RuntimeError("a bug in a template")
        return real_render(batch, *args, **kwargs)

    monkeypatch.setattr(text, "render", render)
    tg = TelegramServer(TOKEN, chat_rate=(20, 1.0))
    wecom = WeComServer(KEY, rate=(20, 1.0))
    with tg, wecom:
        cfg = config(
            tmp_path,
            {
                "tg": {"type": "telegram", "token": TOKEN, "chat_ids": ["7"], "rate": "20/1s"},
                "wecom": {"type": "wecom", "key": KEY, "format": "text", "rate": "20/1s"},
            },
            telegram=tg.url,
            wecom=wecom.url,
            max_delay_s=1000,
        )
        producer = TrackedProducer(settings.connection)
        for i, alert in enumerate(alerts):
            producer.send(settings.topic(ALERTS), alert.encode(), alert.key.encode())
            if i in (3, 8):
                producer.send(settings.topic(ALERTS), bad_ts, alert.key.encode())
        producer.flush()
        good = sorted(a.id for a in alerts if a.id != unlucky.id)
        with running(settings, cfg) as notifier:
            wait_for(
                lambda: len(tg.messages) == len(wecom.messages) == len(good), 60, "the good alerts"
            )
            wait_for(
                lambda: committed(settings, "notify-test") == end_offsets(settings), 30, "commit"
            )
        assert sorted(ids_in(tg.messages, "text", "id")) == good
        assert sorted(ids_in(wecom.messages, "content", "id")) == good
        assert notifier.stats["delivered"] == 2 * len(good)
    letters = [
        DeadLetter.decode(v)
        for *_, v in read_topic(settings.bootstrap_servers, settings.topic(DEADLETTER))
    ]
    by_reason = collections.Counter(d.reason for d in letters)
    assert by_reason == {"bad_timestamp": 2, "notify_error": 2}  # 2 bad alerts; 1 alert x 2
    errors = [d for d in letters if d.reason == "notify_error"]
    assert {d.source["destination"] for d in errors} == {"tg:7", "wecom"}
    assert all("a bug in a template" in d.detail for d in errors)


# --------------------------------------------------------------------------- gateway users


def user_events(settings: Settings) -> list[tuple[int, bytes | None, UserEvent]]:
    """Every record of user_events as (partition, key, event), in partition/offset order."""
    return [
        (partition, key, UserEvent.decode(value))
        for partition, _offset, key, value in read_topic(
            settings.bootstrap_servers, settings.topic(USER_EVENTS)
        )
    ]


def test_a_gateway_user_gets_its_alerts_and_their_outcomes_on_every_destination(
    settings: Settings, tmp_path: Path
) -> None:
    """Routes send range alerts to a Telegram chat, a kicked Telegram chat and gateway user
    desk-1, move alerts to gateway user ops-2: desk-1's stream holds each of its alerts once and
    their outcome on each of the three destinations (delivered, dead_lettered http_403,
    delivered); nothing about the alerts not routed to it."""
    alerts = sample_alerts(12)
    tg = TelegramServer(TOKEN, chat_rate=(20, 1.0), forbidden_chats=("-666",))
    with tg:
        cfg = config(
            tmp_path,
            {
                "tg": {"type": "telegram", "token": TOKEN, "chat_ids": ["7"], "rate": "20/1s"},
                "kicked": {"type": "telegram", "token": TOKEN, "chat_ids": ["-666"], "rate": "20/1s"},
                "desk": {"type": "gateway", "user": "desk-1"},
                "ops": {"type": "gateway", "user": "ops-2"},
            },
            routes=[
                {"channels": ["tg"]},
                {"channels": ["kicked", "desk"], "rules": ["range"]},
                {"channels": ["ops"], "rules": ["move"]},
            ],
            telegram=tg.url,
            max_delay_s=1000,
        )  # fmt: skip
        publish(settings, alerts)
        ranges = {a.id: a for a in alerts if a.rule == "range"}
        moves = {a.id: a for a in alerts if a.rule == "move"}
        want_deliveries = 3 * len(ranges) + 2 * len(moves)
        with running(settings, cfg) as notifier:
            wait_for(lambda: len(tg.messages) == 12, 60, "every alert on Telegram")
            wait_for(
                lambda: committed(settings, "notify-test") == end_offsets(settings), 30, "commit"
            )
            events = notifier.user_events
            assert events is not None
            wait_for(lambda: events.published == want_deliveries, 30, "every outcome confirmed")
    records = user_events(settings)
    assert all(key == event.user.encode() for _, key, event in records)  # keyed by the user
    mine = [e for _, _, e in records if e.user == "desk-1"]
    theirs = [e for _, _, e in records if e.user == "ops-2"]
    assert {e.user for _, _, e in records} == {"desk-1", "ops-2"}
    # The alert events: each routed alert once, as it was on alerts.
    assert sorted((e.alert_id, e.alert) for e in mine if e.type == "alert") == sorted(
        ranges.items()
    )
    assert sorted(e.alert_id for e in theirs if e.type == "alert") == sorted(moves)
    # The outcomes of desk-1's alerts on each of their destinations, and of nothing else.
    outcomes = sorted(
        (e.alert_id, e.channel, e.outcome, e.reason) for e in mine if e.type == "delivery"
    )
    assert outcomes == sorted(
        (i, *o)
        for i in ranges
        for o in (("tg:7", "delivered", ""), ("kicked:-666", "dead_lettered", "http_403"), ("desk", "delivered", ""))
    )  # fmt: skip
    assert sorted((e.alert_id, e.channel, e.outcome) for e in theirs if e.type == "delivery") == (
        sorted((i, c, "delivered") for i in moves for c in ("tg:7", "ops"))
    )
    # A user's records share a partition; an alert event comes before its gateway outcome.
    assert len({p for p, _, e in records if e.user == "desk-1"}) == 1
    for alert_id in ranges:
        kinds = [(e.type, e.channel) for e in mine if e.alert_id == alert_id]
        assert kinds.index(("alert", "")) < kinds.index(("delivery", "desk"))
    assert all(e.ts_ms >= a.ts_ms for e in mine for a in ranges.values() if a.id == e.alert_id)


def test_a_restart_never_publishes_an_alert_event_twice(settings: Settings, tmp_path: Path) -> None:
    """Stopped midway, then restarted in the same group, then replayed by a new group: each
    alert reaches desk-1's stream once; the replay's outcomes are duplicates, saying what the
    store had."""
    alerts = sample_alerts(24)
    hook = WebhookServer()
    with hook:
        cfg = lambda group: config(  # noqa: E731
            tmp_path,
            {
                "hook": {"type": "webhook", "url": hook.url, "rate": "1/0.05s"},
                "desk": {"type": "gateway", "user": "desk-1", "rate": "1/0.05s"},
            },
            max_delay_s=1000,
            group_id=group,
        )
        publish(settings, alerts)
        with running(settings, cfg("g1")) as first:
            wait_for(lambda: first.stats["delivered"] >= 10, 60, "some deliveries")
        assert first.stats["delivered"] < 48
        with running(settings, cfg("g1")):
            wait_for(lambda: len(hook.alert_ids()) == 24, 60, "the rest")
            wait_for(lambda: committed(settings, "g1") == end_offsets(settings), 30, "commit")
        with running(settings, cfg("g2")) as again:
            wait_for(lambda: committed(settings, "g2") == end_offsets(settings), 30, "commit")
            assert again.stats["duplicate"] == 48
            replayed = again.user_events
            assert replayed is not None
            wait_for(lambda: replayed.published == 48, 30, "the replay's outcomes")
    events = [e for _, _, e in user_events(settings)]
    sent = [e.alert_id for e in events if e.type == "alert"]
    assert len(sent) == len(set(sent)) == 24
    assert sorted(sent) == sorted(a.id for a in alerts)
    # The replay's duplicates, for every alert on both destinations (and those of the restart
    # in g1, for the alerts delivered after the last commit of the first run).
    duplicates = collections.Counter(
        (e.alert_id, e.channel, e.reason) for e in events if e.outcome == "duplicate"
    )
    assert set(duplicates) == {(a.id, c, "delivered") for a in alerts for c in ("hook", "desk")}
    assert set(duplicates.values()) <= {1, 2}
    finished = {(e.alert_id, e.channel) for e in events if e.outcome == "delivered"}
    assert finished == {(a.id, c) for a in alerts for c in ("hook", "desk")}
