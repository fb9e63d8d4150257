"""The one settings parser: layers, types, errors, secrets, and the hand-off to the flow child."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from candlewax.cli import build_parser
from candlewax.cli.common import settings_from
from candlewax.cli.demo import DEMO_DEFAULTS
from candlewax.cli.flow import flow_command, flow_env
from candlewax.errors import ConfigError
from candlewax.logs import SECRETS
from candlewax.settings import Settings

#: A value of every field that differs from its default — commas, "=", quotes, unicode and
#: secrets included — so a field dropped or mangled on the way to the child shows.
EVERY_FIELD = {
    "bootstrap_servers": "k1:9093,k2:9093",
    "topic_prefix": "prod.eu-1_",
    "partitions": 12,
    "replication_factor": 3,
    "retention_ms": 86_400_000,
    "data_dir": "/var/lib/candlewax/da,ta=1",
    "intervals": ["1m", "15m", "1h"],
    "lateness_ms": 7_000,
    "max_clock_skew_ms": 1,
    "max_time_jump_ms": 2,
    "time_jump_quorum": 5,
    "batch_max": 123,
    "group_id": "flow,group=a",
    "archive_trades": False,
    "exit_when_done": True,
    "metrics_host": "0.0.0.0",
    "metrics_port": 9999,
    "metric_symbols_max": 0,
    "cluster": {
        "workers": 3,
        "process_id": 1,
        "addresses": ["flow-0.svc:3030", "flow-1.svc:3030"],
        "replicas": 2,
        "peer_domain": "flow.ns.svc.cluster.local",
        "port": 4040,
        "pod_name": "flow-1",
        "bytewax_api_port": 3031,
    },
    "recovery": {"directory": "/rec,overy=x", "snapshot_s": 3, "backup_s": 60},
    "alerts": {
        "range": {"1m": 0.001, "BTCUSDT@5m": 0.002},
        "move": {"15m": 0.03},
        "move_bars": 4,
        "zscore": {},
        "zscore_halflife_bars": 12.5,
        "zscore_warmup_bars": 7,
        "cooldown_ms": 1,
    },
    "notify": {
        "channels": {
            "tg": {
                "type": "telegram",
                "token": "123:tok,en=x",
                "chat_ids": ["-100", "42"],
                "parse_mode": "MarkdownV2",
                "rate": ["1/2s"],
                "bot_rate": ["25/1s"],
                "language": "zh",
            },
            "hook": {
                "type": "webhook",
                "url": "https://h.example/x?a=1,b=2",
                "secret": "hmac=secret,1",
                "headers": {"Authorization": "Bearer a=b"},
            },
            "robot": {
                "type": "wecom",
                "key": "wk-1,2",
                "format": "text",
                "mentioned_list": ["@all"],
                "mentioned_mobile_list": ["138"],
            },
            "con": {"type": "console"},
        },
        "routes": [
            {
                "channels": ["tg", "hook"],
                "rules": ["range"],
                "symbols": ["BTCUSDT"],
                "venues": ["binance"],
                "intervals": ["1m"],
                "min_severity": "critical",
            }
        ],
        "group_id": "n,g=1",
        "state_file": "/s,t=ate.sqlite3",
        "keep_days": 2.5,
        "language": "zh",
        "max_delay_s": 3.0,
        "max_retry_s": 4.0,
        "timeout_s": 5.0,
        "max_pending": 6,
        "start": "earliest",
    },
    "gateway": {
        "host": "0.0.0.0",
        "port": 8081,
        "default_venue": "okx",
        "max_streams": 10,
        "max_incoming_per_s": 6,
        "max_connections": 7,
        "max_message_bytes": 4096,
        "ping_interval_s": 1.5,
        "ping_timeout_s": 2.5,
        "push_interval_ms": 250,
        "queue_size": 11,
        "klines_limit_default": 12,
        "klines_limit_max": 13,
        "alerts_kept": 14,
        "backfill_messages": 15,
        "allowed_origins": ["https://a.example", "https://b.example"],
        "keys_file": "/k,e=ys.toml",
        "login_window_ms": 5000,
    },
    "empty_intervals": {
        "default": "skip",
        "venues": {"okx": "flat"},
        "symbols": {"binance:A,B": "flat"},
    },
    "day_timezone": "+08:00",
    "sessions": {
        "us": {
            "timezone": "America/New_York",
            "regular": "09:30-16:00",
            "pre": "04:00-09:30",
            "post": "16:00-20:00",
            "weekdays": "mon-fri",
            "holidays": ["2024-07-04"],
            "out_of_session": "bars",
        }
    },
    "session_of": {"finnhub": "us", "finnhub:SPY": "us"},
    "bar_kinds": {"binance:BTCUSDT": ["tick:1000", "value:1000000"], "*": ["volume:10"]},
    "telegram_api_url": "http://127.0.0.1:1/a=b,c",
    "wecom_api_url": "http://127.0.0.1:2",
    "symbols": ["BTCUSDT", "ETHUSDT"],
    "kafka": {
        "security.protocol": "SASL_SSL",
        "ssl.cipher.suites": "ECDHE-RSA-AES128-GCM-SHA256,ECDHE-RSA-AES256-GCM-SHA384",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "candle,wax",
        "sasl.password": 'p=a,s;s"word',
        "socket.keepalive.enable": "true",
    },
}


def every_field(tmp_path: Path) -> Settings:
    secret = tmp_path / "ssl-key-password"
    secret.write_text("file=secret,1\n")
    return Settings.load(env={}, **EVERY_FIELD, kafka_secret_files={"ssl.key.password": str(secret)})  # fmt: skip


def test_the_example_sets_every_field_away_from_its_default(tmp_path: Path) -> None:
    settings = every_field(tmp_path)
    defaults = Settings()
    same = [n for n in Settings.model_fields if getattr(settings, n) == getattr(defaults, n)]
    assert same == []


def test_a_child_gets_every_field_unchanged_through_one_variable(tmp_path: Path) -> None:
    settings = every_field(tmp_path)
    env = flow_env(settings, {"PATH": "/bin", "BYTEWAX_PROCESS_ID": "9"})
    assert "BYTEWAX_PROCESS_ID" not in env  # the parent's stray Bytewax variables stay behind
    assert env["BYTEWAX_DATAFLOW_API_PORT"] == "3031"
    # Another interpreter reads it back: equal field for field, secrets in clear for clients.
    code = (
        "import sys, orjson; from candlewax.settings import Settings; s = Settings.inherited(); "
        "sys.stdout.write(orjson.dumps({'kafka': s.kafka_config(), 'tg': "
        "s.notify.channels['tg'].token.get_secret_value(), 'json': s.to_json()}).decode())"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True)
    child = orjson.loads(out.stdout)
    assert Settings.from_json(child["json"]) == settings
    assert child["kafka"] == {**EVERY_FIELD["kafka"], "ssl.key.password": "file=secret,1"}
    assert child["tg"] == "123:tok,en=x"


def test_secrets_never_print(tmp_path: Path) -> None:
    settings = every_field(tmp_path)
    shown = repr(settings) + str(settings) + settings.model_dump_json() + repr(settings.connection)
    for secret in ('p=a,s;s"word', "123:tok,en=x", "hmac=secret,1", "wk-1,2", "Bearer a=b"):
        assert secret not in shown
        assert SECRETS.redact(f"x {secret} y") == "x *** y"
    assert "SCRAM-SHA-512" in shown  # what is not secret still shows
    assert "file=secret,1" not in shown and SECRETS.redact("file=secret,1") == "***"


def test_layers_file_then_environment_then_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "[candlewax]\npartitions = 3\ntopic_prefix = 'file.'\nlateness_ms = 1\n"
        "[candlewax.alerts]\ncooldown_ms = 5\nrange = {'1m' = 0.25}\n"
        "[candlewax.kafka]\n'socket.keepalive.enable' = true\n'fetch.wait.max.ms' = 50\n"
    )
    env = {
        "CANDLEWAX_TOPIC_PREFIX": "env.",
        "CANDLEWAX_LATENESS_MS": "2",
        "CANDLEWAX_ALERTS__COOLDOWN_MS": "6",  # one member of a table
        "CANDLEWAX_INTERVALS": "1m,5m",
    }
    s = Settings.load(path, env=env, lateness_ms=3, defaults={"partitions": 9, "batch_max": 7})
    assert (s.partitions, s.topic_prefix, s.lateness_ms, s.batch_max) == (3, "env.", 3, 7)
    assert s.alerts.cooldown_ms == 6 and s.alerts.range == {"1m": 0.25}  # merged, not replaced
    assert s.intervals == ("1m", "5m")
    assert s.kafka_config() == {"socket.keepalive.enable": "true", "fetch.wait.max.ms": "50"}


def test_the_command_line_is_the_top_layer(tmp_path: Path) -> None:
    parser = build_parser()
    args = parser.parse_args(
        ["flow", "--partitions", "5", "-w", "2", "-i", "1", "-a", "h0:1;h1:1", "-r", str(tmp_path)]
    )
    s = settings_from(args)
    assert s.partitions == 5 and s.cluster.workers == 2 and s.recovery.directory == tmp_path
    assert flow_command(s, {})[4:] == [
        "-w", "2", "-i", "1", "-a", "h0:1;h1:1", "-r", str(tmp_path), "-s", "10", "-b", "0",
    ]  # fmt: skip
    args = parser.parse_args(["notify", "--group-id", "g", "--from-beginning"])
    s = settings_from(args)
    assert (s.notify.group_id, s.notify.start) == ("g", "earliest")
    s = settings_from(parser.parse_args(["demo"]), defaults=DEMO_DEFAULTS)
    assert (s.partitions, s.retention_ms) == (2, -1)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CANDLEWAX_PARTITIONS": "zero"}, "setting partitions in CANDLEWAX_PARTITIONS: .*integer.*'zero'"),
        ({"CANDLEWAX_PARTITIONS": "0"}, "greater than 0"),
        ({"CANDLEWAX_INTERVALS": "1m,2m"}, r"intervals.*\['2m'\] unknown"),
        ({"CANDLEWAX_INTERVALS": "5m"}, "must include 1m"),
        ({"CANDLEWAX_KAFKA": "acks=all"}, "CANDLEWAX_KAFKA is not valid JSON"),
        ({"CANDLEWAX_KAFKA": '{"acks": [1]}'}, "a value must be a string, number or boolean"),
        ({"CANDLEWAX_KAFKA": '{"sasl.mechanismz": "PLAIN"}'}, "kafka property error.*sasl.mechanismz"),
        ({"CANDLEWAX_ALERTS": '{"range": {"1x": 0.1}}'}, "alerts.range.*'1x'.*SYMBOL@interval"),
        ({"CANDLEWAX_ALERTS": '{"range": {"1m": -1}}'}, "must be a positive number"),
        ({"CANDLEWAX_ALERTS": '{"rnage": {}}'}, "unknown setting 'alerts.rnage'"),
        ({"CANDLEWAX_ALERTS__MOVE_BARS": "0"}, "alerts.move_bars"),
        ({"CANDLEWAX_NOTIFY": '{"channels": {"a": {"type": "telegram", "tokn": "x"}}}'},
         "unknown setting 'notify.channels.a.tokn'"),
        ({"CANDLEWAX_CLUSTER__ADDRESSES": "a:1;b"}, r"cluster.addresses.*\['b'\]"),
        ({"CANDLEWAX_TELEGRAM_API_URL": "ftp://x"}, "telegram_api_url"),
        ({"CANDLEWAX_KAFKA_SECRET_FILES": '{"sasl.password": "/nonexistent/pw"}'},
         "sasl.password from /nonexistent/pw: No such file"),
    ],
)  # fmt: skip
def test_bad_settings_are_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        Settings.load(env=env)
    assert "\n" not in str(caught.value)


def test_a_secret_in_a_bad_value_is_not_repeated() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.load(env={"CANDLEWAX_NOTIFY": '{"channels": {"a": {"type": "wecom", "key": 7}}}'})
    assert "notify.channels.a.key" in str(caught.value) and "got" not in str(caught.value)


def test_unknown_variables_warn_and_kubernetes_service_links_do_not(caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    Settings.load(env={"CANDLEWAX_LATENES_MS": "1", "CANDLEWAX_FLOW_SERVICE_PORT": "9464"})
    warned = [r.getMessage() for r in caplog.records]
    assert any("CANDLEWAX_LATENES_MS" in w for w in warned)
    assert not any("SERVICE_PORT" in w for w in warned)


def test_settings_are_frozen_and_replace_revalidates() -> None:
    s = Settings()
    with pytest.raises(Exception, match="frozen"):
        s.partitions = 3  # type: ignore[misc]
    assert s.replace(partitions=3).partitions == 3
    with pytest.raises(ConfigError, match="partitions"):
        s.replace(partitions=-1)


@pytest.mark.parametrize(
    ("cluster", "env", "expected"),
    [
        ({}, {}, (0, ())),
        ({"addresses": "a:1;b:1", "process_id": 1}, {}, (1, ("a:1", "b:1"))),
        ({"replicas": 3, "peer_domain": "flow.ns.svc.cluster.local"}, {"HOSTNAME": "candlewax-flow-2"},
         (2, tuple(f"candlewax-flow-{i}.flow.ns.svc.cluster.local:3030" for i in range(3)))),
    ],
)  # fmt: skip
def test_cluster_place_from_flags_or_the_statefulset(cluster, env, expected) -> None:
    assert Settings.load(env={}, cluster=cluster).cluster.resolve(env) == expected


@pytest.mark.parametrize(
    ("cluster", "env", "message"),
    [
        ({"process_id": 1}, {}, "where are the other processes"),
        ({"addresses": "a:1", "process_id": 1}, {}, "not below the 1 cluster.addresses"),
        ({"replicas": 2, "peer_domain": "d"}, {"HOSTNAME": "laptop"}, "not <statefulset>-<ordinal>"),
        ({"replicas": 2, "peer_domain": "d"}, {"HOSTNAME": "flow-2"}, "ordinal 2 but cluster.replicas is 2"),
        ({"replicas": 2}, {"HOSTNAME": "flow-0"}, "needs cluster.peer_domain"),
    ],
)  # fmt: skip
def test_cluster_mistakes_are_clear(cluster, env, message) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(env={}, cluster=cluster).cluster.resolve(env)


_NAMES = ["PARTITIONS", "INTERVALS", "KAFKA", "ALERTS", "NOTIFY", "CLUSTER", "CLUSTER__ADDRESSES",
          "DATA_DIR", "ALERTS__RANGE", "KAFKA_SECRET_FILES", "RECOVERY", "SYMBOLS", "METRICS_PORT",
          "DAY_TIMEZONE", "SESSIONS", "SESSION_OF", "BAR_KINDS", "SESSIONS__US"]  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    env=st.dictionaries(
        st.sampled_from(_NAMES).map(lambda n: f"CANDLEWAX_{n}"),
        st.one_of(
            st.text(max_size=40),
            st.recursive(
                st.none()
                | st.booleans()
                | st.integers(-(2**63), 2**63 - 1)
                | st.floats()
                | st.text(max_size=10),
                lambda inner: (
                    st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=12), inner, max_size=3)
                ),
                max_leaves=8,
            ).map(lambda v: orjson.dumps(v).decode()),
        ),
        max_size=4,
    )
)
def test_any_environment_gives_settings_or_one_clear_error(env: dict[str, str]) -> None:
    """Fuzz: whatever the CANDLEWAX_* variables hold, the parser returns settings or raises
    ConfigError with one line — never another exception, never a traceback."""
    try:
        loaded = Settings.load(env=env)
    except ConfigError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert Settings.from_json(loaded.to_json()) == loaded
