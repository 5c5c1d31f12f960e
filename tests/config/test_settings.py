"""Settings: every variable parsed and validated, one clear error naming the variable."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from config.settings import MAX_TTL, ConfigError, Rate, Window, load_settings, parse_rate, parse_throttle
from tests.servers import redis_url
from tests.support import ROOT

BASE = {"IHUYI_APIID": "id", "IHUYI_APIKEY": "key"}
#: Only parsed, never connected to (``.invalid`` never resolves).
AMQP = {**BASE, "CELERY_BROKER_URL": "amqp://guest:guest@rabbitmq.invalid/voicecode", "REDIS_URL": "redis://redis.invalid/15"}


def test_defaults_match_the_design():
    s = load_settings(BASE)
    assert s.api_url == "https://api.voice.ihuyi.com/webservice/voice.php"
    assert s.password_mode == "dynamic" and s.code_ttl == 300 and s.balance_alert_threshold == 100
    assert s.accounts["default"].rate == Rate(10, 1.0, 1)  # never more than 10 in any second
    assert s.host == socket.gethostname()
    assert (s.metrics_basic_auth, s.metrics_port, s.metrics_address) == (None, 9808, "127.0.0.1")
    assert s.mobile_throttle == (Window(1, 60), Window(5, 3600), Window(10, 86400))
    assert s.embedded and s.sentry_dsn is None
    assert (s.worker_pool, s.worker_concurrency) == ("threads", 64)
    assert (s.flower_address, s.flower_port) == ("127.0.0.1", 5555)


def test_several_accounts_with_rates_bursts_and_fallbacks():
    accounts = {"a": {"apiid": "1", "apikey": "k1", "rate_limit": "5/s", "fallback": "b"},
                "b": {"apiid": "2", "apikey": "k2", "rate_limit": "120/m", "burst": 7}}
    s = load_settings({"IHUYI_ACCOUNTS": json.dumps(accounts)})
    assert set(s.accounts) == {"a", "b"}
    assert s.accounts["a"].fallback == "b" and s.accounts["b"].rate == Rate(120, 60.0, 7)
    assert "k1" not in repr(s.accounts["a"])


@pytest.mark.parametrize("env, variable", [
    ({}, "IHUYI_APIID"),
    ({"IHUYI_APIID": "id"}, "IHUYI_APIKEY"),
    ({**BASE, "IHUYI_RATE_LIMIT": "fast"}, "IHUYI_RATE_LIMIT"),
    ({**BASE, "IHUYI_RATE_LIMIT": "0/s"}, "IHUYI_RATE_LIMIT"),
    ({**BASE, "IHUYI_PASSWORD_MODE": "plain"}, "IHUYI_PASSWORD_MODE"),
    ({**BASE, "VOICE_CODE_TTL": "soon"}, "VOICE_CODE_TTL"),
    ({**BASE, "VOICE_CODE_TTL": "0"}, "VOICE_CODE_TTL"),
    ({**BASE, "MOBILE_THROTTLE": "1/60s,lots"}, "MOBILE_THROTTLE"),
    ({**BASE, "CELERY_BROKER_URL": "http://x"}, "CELERY_BROKER_URL"),
    ({**BASE, "IHUYI_API_URL": "ftp://x"}, "IHUYI_API_URL"),
    ({**BASE, "FLOWER_BASIC_AUTH": "nopassword"}, "FLOWER_BASIC_AUTH"),
    ({**BASE, "BALANCE_ALERT_THRESHOLD": "-1"}, "BALANCE_ALERT_THRESHOLD"),
    ({"IHUYI_ACCOUNTS": "{not json"}, "IHUYI_ACCOUNTS"),
    ({"IHUYI_ACCOUNTS": '{"a": {"apiid": "1"}}'}, "IHUYI_ACCOUNTS"),
    ({"IHUYI_ACCOUNTS": '{"a": {"apiid": "1", "apikey": "k", "fallback": "zz"}}'}, "IHUYI_ACCOUNTS"),
    ({"IHUYI_ACCOUNTS": '{"a": {"apiid": "1", "apikey": "k", "burst": 0}}'}, "IHUYI_ACCOUNTS"),
    # Every number finite and bounded, every value checked:
    ({**BASE, "VOICE_CODE_TTL": str(MAX_TTL + 1)}, "VOICE_CODE_TTL"),
    ({**BASE, "VOICE_CODE_TTL": "999999999"}, "VOICE_CODE_TTL"),
    ({**BASE, "IHUYI_READ_TIMEOUT": "nan"}, "IHUYI_READ_TIMEOUT"),
    ({**BASE, "IHUYI_READ_TIMEOUT": "inf"}, "IHUYI_READ_TIMEOUT"),
    ({**BASE, "IHUYI_READ_TIMEOUT": "301"}, "IHUYI_READ_TIMEOUT"),
    ({**BASE, "IHUYI_CONNECT_TIMEOUT": "-inf"}, "IHUYI_CONNECT_TIMEOUT"),
    ({**BASE, "IHUYI_CONNECT_TIMEOUT": "61"}, "IHUYI_CONNECT_TIMEOUT"),
    ({**BASE, "VOICECODE_RETRY_CAP": "nan"}, "VOICECODE_RETRY_CAP"),
    ({**AMQP, "VOICECODE_RETRY_CAP": "3601"}, "VOICECODE_RETRY_CAP"),
    ({**BASE, "VOICECODE_RETRY_BASE": "inf"}, "VOICECODE_RETRY_BASE"),
    ({**BASE, "VOICECODE_RETRY_BASE": "31"}, "VOICECODE_RETRY_BASE"),  # above the default cap
    ({**BASE, "VOICECODE_RETRY_CAP": "120"}, "VOICECODE_RETRY_CAP"),  # a Redis broker redelivers it at 120 s
    ({**BASE, "VOICECODE_MAX_ATTEMPTS": "101"}, "VOICECODE_MAX_ATTEMPTS"),
    ({**BASE, "SENTRY_TRACES_SAMPLE_RATE": "1.5"}, "SENTRY_TRACES_SAMPLE_RATE"),
    ({**BASE, "SENTRY_TRACES_SAMPLE_RATE": "nan"}, "SENTRY_TRACES_SAMPLE_RATE"),
    ({**BASE, "SENTRY_DSN": "not a dsn"}, "SENTRY_DSN"),
    ({**BASE, "SENTRY_DSN": "https://o0.ingest.sentry.io/0"}, "SENTRY_DSN"),
    ({**BASE, "SENTRY_ENVIRONMENT": "eu/prod"}, "SENTRY_ENVIRONMENT"),
    ({**BASE, "ALERT_DEDUP_SECONDS": "99999999999"}, "ALERT_DEDUP_SECONDS"),
    ({**BASE, "BALANCE_CHECK_SECONDS": "inf"}, "BALANCE_CHECK_SECONDS"),
    ({**BASE, "ACCOUNT_PROBE_SECONDS": "nan"}, "ACCOUNT_PROBE_SECONDS"),
    ({**BASE, "REDIS_VISIBILITY_TIMEOUT": str(MAX_TTL + 1)}, "REDIS_VISIBILITY_TIMEOUT"),
    ({**BASE, "IHUYI_RATE_LIMIT": "\u0661\u0660/s"}, "IHUYI_RATE_LIMIT"),  # Arabic-Indic digits
    ({**BASE, "IHUYI_RATE_LIMIT": "9" * 5000 + "/s"}, "IHUYI_RATE_LIMIT"),
    ({**BASE, "MOBILE_THROTTLE": "1/00s"}, "MOBILE_THROTTLE"),
    ({**BASE, "MOBILE_THROTTLE": "1/31d"}, "MOBILE_THROTTLE"),
    ({**BASE, "WORKER_POOL": "gevent"}, "WORKER_POOL"),
    ({**BASE, "WORKER_POOL": "fast"}, "WORKER_POOL"),
    ({**BASE, "WORKER_CONCURRENCY": "abc"}, "WORKER_CONCURRENCY"),
    ({**BASE, "WORKER_CONCURRENCY": "0"}, "WORKER_CONCURRENCY"),
    ({**BASE, "WORKER_CONCURRENCY": "1001"}, "WORKER_CONCURRENCY"),
    ({**BASE, "FLOWER_PORT": "0"}, "FLOWER_PORT"),
    ({**BASE, "FLOWER_PORT": "65536"}, "FLOWER_PORT"),
    ({**BASE, "FLOWER_ADDRESS": "  "}, "FLOWER_ADDRESS"),
    ({**BASE, "FLOWER_ADDRESS": "local host"}, "FLOWER_ADDRESS"),
    ({**BASE, "FLOWER_BASIC_AUTH": "ops:pass,word"}, "FLOWER_BASIC_AUTH"),  # Flower would accept "word" alone
    ({**BASE, "METRICS_BASIC_AUTH": "scraper"}, "METRICS_BASIC_AUTH"),
    ({**BASE, "METRICS_PORT": "65536"}, "METRICS_PORT"),
    ({**BASE, "METRICS_ADDRESS": "local host"}, "METRICS_ADDRESS"),
    ({**BASE, "VOICECODE_HOST": "host a"}, "VOICECODE_HOST"),
    ({**BASE, "VOICECODE_HOST": "w1@host"}, "VOICECODE_HOST"),
    ({**BASE, "VOICECODE_HOST": "h" * 65}, "VOICECODE_HOST"),
    ({"IHUYI_ACCOUNTS": '{"a": {"apiid": "1", "apikey": "k", "fallback": ["b"]}}'}, "IHUYI_ACCOUNTS"),
    ({"IHUYI_ACCOUNTS": '{"a": {"apiid": {"x": 1}, "apikey": "k"}}'}, "IHUYI_ACCOUNTS"),
    ({"IHUYI_ACCOUNTS": '{"": {"apiid": "1", "apikey": "k"}}'}, "IHUYI_ACCOUNTS"),
    ({"IHUYI_ACCOUNTS": '{"a": {"apiid": "1", "apikey": "k", "burst": 10000001}}'}, "IHUYI_ACCOUNTS"),
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.variable == variable and str(info.value).startswith(variable + ": ")
    assert len(str(info.value)) < 200 and "\n" not in str(info.value)


def test_values_at_the_bounds_and_the_new_variables_are_accepted():
    s = load_settings({**BASE, "VOICE_CODE_TTL": str(MAX_TTL), "IHUYI_CONNECT_TIMEOUT": "60", "IHUYI_READ_TIMEOUT": "300",
                       "VOICECODE_RETRY_BASE": "5", "VOICECODE_RETRY_CAP": "5", "SENTRY_TRACES_SAMPLE_RATE": "1",
                       "SENTRY_DSN": "https://key@o0.ingest.sentry.io/0", "WORKER_POOL": " Solo ",
                       "WORKER_CONCURRENCY": "1000", "FLOWER_PORT": "65535", "FLOWER_ADDRESS": "::",
                       "FLOWER_BASIC_AUTH": "ops:pw1,audit:pw2", "METRICS_BASIC_AUTH": "prom:pw3",
                       "METRICS_PORT": "9100", "METRICS_ADDRESS": "0.0.0.0", "VOICECODE_HOST": " web-2.eu_1 ",
                       "IHUYI_API_URL": "http://127.0.0.1:8099/webservice/voice.php"})
    assert (s.code_ttl, s.connect_timeout, s.read_timeout, s.retry_base, s.retry_cap) == (MAX_TTL, 60, 300, 5, 5)
    assert (s.worker_pool, s.worker_concurrency, s.flower_port, s.flower_address) == ("solo", 1000, 65535, "::")
    assert (s.metrics_basic_auth, s.metrics_port, s.metrics_address, s.host) == ("prom:pw3", 9100, "0.0.0.0", "web-2.eu_1")
    assert s.api_url.startswith("http://")  # plain http only when set, with a warning (worker/sending/flow.py)
    assert load_settings({**AMQP, "VOICECODE_RETRY_CAP": "3600"}).retry_cap == 3600  # RabbitMQ has no visibility timeout


def test_a_refused_password_or_dsn_is_never_shown():
    for env in ({"FLOWER_BASIC_AUTH": "ops:hunter2,x"}, {"SENTRY_DSN": "https://hunter2@h:port/1"}):
        with pytest.raises(ConfigError) as info:
            load_settings({**BASE, **env})
        assert "hunter2" not in str(info.value)


def test_rates_and_windows_parse():
    assert parse_rate("X", "600/m") == Rate(600, 60.0, 1)
    assert parse_rate("X", "20/s", 5) == Rate(20, 1.0, 5)  # a burst only when asked for
    assert parse_throttle("X", "10/d, 1/60s,5/h") == (Window(1, 60), Window(5, 3600), Window(10, 86400))
    assert parse_throttle("X", "") == ()


@pytest.mark.parametrize("argv", [["-m", "cli", "accounts"], ["-m", "celery", "-A", "worker.app", "worker"]])
def test_a_bad_value_stops_the_process_with_one_line(argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IHUYI_", "VOICE", "CELERY_", "REDIS_"))}
    env.update(BASE, VOICE_CODE_TTL="soon", VOICECODE_ENV_FILE=os.devnull)
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "voicecode: configuration error: VOICE_CODE_TTL: expected an integer, got 'soon'"
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def minimal_env(**extra: str) -> dict[str, str]:
    """Only what a worker needs to start, on a database of the session's Redis no other test uses for queues."""
    return {**BASE, "CELERY_BROKER_URL": redis_url(15), "VOICECODE_ENV_FILE": os.devnull, **extra}


def test_a_bad_worker_concurrency_stops_the_worker_with_one_line():
    done = subprocess.run([sys.executable, "-m", "celery", "-A", "worker.app", "worker"], cwd=ROOT,
                          env=minimal_env(WORKER_CONCURRENCY="abc"), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["voicecode: configuration error: WORKER_CONCURRENCY: expected an integer, got 'abc'"]


def test_the_worker_takes_its_pool_and_size_from_the_settings_not_the_procfile():
    for procfile in ("Procfile", "Procfile.dev"):
        worker = next(line for line in (ROOT / procfile).read_text().splitlines() if line.startswith("worker:"))
        assert "--pool" not in worker and "--concurrency" not in worker
    done = subprocess.run([sys.executable, "-c", "from worker.app import app; print(app.conf.worker_pool, app.conf.worker_concurrency)"],
                          cwd=ROOT, env=minimal_env(WORKER_POOL="solo", WORKER_CONCURRENCY="3"),
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["solo", "3"], done.stderr
