"""Settings: every variable parsed and validated, one clear error naming the variable."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from config.settings import ConfigError, Rate, Window, load_settings, parse_rate, parse_throttle
from tests.support import ROOT

BASE = {"IHUYI_APIID": "id", "IHUYI_APIKEY": "key"}


def test_defaults_match_the_design():
    s = load_settings(BASE)
    assert s.api_url == "http://api.voice.ihuyi.com/webservice/voice.php"
    assert s.password_mode == "dynamic" and s.code_ttl == 300 and s.balance_alert_threshold == 100
    assert s.accounts["default"].rate == Rate(10, 1.0, 10)
    assert s.mobile_throttle == (Window(1, 60), Window(5, 3600), Window(10, 86400))
    assert s.embedded and s.sentry_dsn is None


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
])
def test_bad_values_name_the_variable(env, variable):
    with pytest.raises(ConfigError) as info:
        load_settings(env)
    assert info.value.variable == variable and str(info.value).startswith(variable + ": ")


def test_rates_and_windows_parse():
    assert parse_rate("X", "600/m") == Rate(600, 60.0, 10)
    assert parse_throttle("X", "10/d, 1/60s,5/h") == (Window(1, 60), Window(5, 3600), Window(10, 86400))
    assert parse_throttle("X", "") == ()


@pytest.mark.parametrize("argv", [["-m", "worker.cli", "accounts"], ["-m", "celery", "-A", "worker.app", "worker"]])
def test_a_bad_value_stops_the_process_with_one_line(argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IHUYI_", "VOICE", "CELERY_", "REDIS_"))}
    env.update(BASE, VOICE_CODE_TTL="soon", VOICECODE_ENV_FILE=os.devnull)
    done = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1] == "voicecode: configuration error: VOICE_CODE_TTL: expected an integer, got 'soon'"
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
