"""Alert kinds and their pool-wide deduplication (one real Redis; Sentry itself is not initialised here)."""
from __future__ import annotations

import pytest
import redis

from worker.ops.alerts import (ACCOUNT_FROZEN, BALANCE_BELOW_THRESHOLD, CONFIGURATION, CREDENTIALS_REFUSED, LOW_BALANCE,
                           UNKNOWN_CODE, Alerts, kind_for_code)


@pytest.mark.parametrize(("code", "kind"), [
    (4051, LOW_BALANCE), (4050, ACCOUNT_FROZEN), (408, ACCOUNT_FROZEN), (405, CREDENTIALS_REFUSED),
    (400, CREDENTIALS_REFUSED), (4052, CREDENTIALS_REFUSED), (401, CONFIGURATION), (402, CONFIGURATION),
    (9999, UNKNOWN_CODE), (4030, None), (406, None), (4070, None), (0, None), (2, None), (None, None),
])
def test_codes_that_need_a_person_map_to_one_kind(code, kind):
    assert kind_for_code(code) == kind


def test_every_kind_but_the_balance_warning_is_an_error():
    errors = (LOW_BALANCE, ACCOUNT_FROZEN, CREDENTIALS_REFUSED, CONFIGURATION, UNKNOWN_CODE)
    assert {kind.level for kind in errors} == {"error"} and BALANCE_BELOW_THRESHOLD.level == "warning"


def test_one_alert_per_kind_and_account_inside_the_window(redis_db):
    alerts = Alerts(redis_db, window=600)
    raised = [alerts.raise_alert("low_balance", "default", level="error", message="m", code=4051) for _ in range(5)]
    assert raised == [True, False, False, False, False]
    assert alerts.raise_alert("low_balance", "spare", level="error", message="m", code=4051)
    assert alerts.raise_alert("account_frozen", "default", level="error", message="m", code=4050)
    assert 590 < redis_db.ttl("voicecode:alert:low_balance:default") <= 600


def test_the_window_is_shared_by_every_process(redis_db):
    first, second = Alerts(redis_db, window=600), Alerts(redis.Redis(host="127.0.0.1", port=6379, db=13), window=600)
    assert first.for_code(4050, "default", "on Submit") is True
    assert second.for_code(4050, "default", "on Submit") is False
    assert second.for_code(4030, "default", "on Submit") is False  # a message-scoped code needs nobody


def test_an_alert_is_raised_again_after_the_window(redis_db):
    alerts = Alerts(redis_db, window=600)
    assert alerts.raise_alert("unknown_code", "default", level="error", message="m", code=9999)
    redis_db.delete("voicecode:alert:unknown_code:default")  # what the window's expiry does
    assert alerts.raise_alert("unknown_code", "default", level="error", message="m", code=9999)


def test_without_the_shared_state_the_alert_is_raised_rather_than_lost():
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    assert Alerts(unreachable, window=600).raise_alert("low_balance", "default", level="error", message="m")
