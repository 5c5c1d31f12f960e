"""Alert kinds and their pool-wide deduplication (one real Redis; Sentry itself is not initialised here)."""
from __future__ import annotations

import logging

import pytest
import redis

from tests.servers import redis_client
from tests.worker.conftest import TEST_DB
from worker.ops.alerts import (ACCOUNT_FROZEN, BALANCE_BELOW_THRESHOLD, CLOCK_SKEW, CONFIGURATION, CREDENTIALS_REFUSED,
                               IP_REFUSED, LOW_BALANCE, UNKNOWN_CODE, Alerts, kind_for_code)
from worker.sending.flow import Refusal
from worker.stores.accounts import Pause


@pytest.mark.parametrize(("code", "kind"), [
    (4051, LOW_BALANCE), (4050, ACCOUNT_FROZEN), (408, ACCOUNT_FROZEN), (405, CREDENTIALS_REFUSED),
    (400, IP_REFUSED), (4052, IP_REFUSED), (401, CONFIGURATION), (402, CONFIGURATION),
    (9999, UNKNOWN_CODE), (4030, None), (406, None), (4070, None), (0, None), (2, None), (None, None),
    *((code, None) for code in range(4080, 4087)),  # a number called too often: nobody's needed
])
def test_codes_that_need_a_person_map_to_one_kind(code, kind):
    assert kind_for_code(code) == kind


def test_every_kind_but_the_balance_warning_is_an_error():
    errors = (LOW_BALANCE, ACCOUNT_FROZEN, CREDENTIALS_REFUSED, CONFIGURATION, UNKNOWN_CODE, IP_REFUSED, CLOCK_SKEW)
    assert {kind.level for kind in errors} == {"error"} and BALANCE_BELOW_THRESHOLD.level == "warning"


def test_one_alert_per_kind_and_account_inside_the_window(redis_db):
    alerts = Alerts(redis_db, window=600)
    raised = [alerts.raise_alert("low_balance", "default", level="error", message="m", code=4051) for _ in range(5)]
    assert raised == [True, False, False, False, False]
    assert alerts.raise_alert("low_balance", "spare", level="error", message="m", code=4051)
    assert alerts.raise_alert("account_frozen", "default", level="error", message="m", code=4050)
    assert 590 < redis_db.ttl("voicecode:alert:low_balance:default") <= 600


def test_the_window_is_shared_by_every_process(redis_db):
    first, second = Alerts(redis_db, window=600), Alerts(redis_client(TEST_DB), window=600)
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


def alert_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("ALERT ")]


def test_a_hosts_ip_refused_is_an_alert_naming_that_host_one_per_host(redis_db, caplog):
    alerts = Alerts(redis_db, window=600)
    refusals = [Refusal("default", 4052, "on Submit", Pause(4052, "访问ip与备案ip不符", 0.0, host))
                for host in ("host-a", "host-a", "host-b")]
    with caplog.at_level(logging.WARNING, logger="worker.ops.alerts"):
        assert [alerts.for_refusal(r) for r in refusals] == [True, False, True]
    first, second = alert_lines(caplog)
    assert first.startswith("ALERT ip_refused [error] account default host host-a: ihuyi account default: "
                            "code 4052 on host host-a: ihuyi refuses this host's IP; host host-a no longer sends")
    assert "host host-b" in second
    assert redis_db.exists("voicecode:alert:ip_refused:default:host-a", "voicecode:alert:ip_refused:default:host-b") == 2


def test_a_skewed_clock_is_its_own_alert(redis_db, caplog):
    skew = "clock skew on host host-a by 3600 s (ahead of ihuyi's clock; the state Redis's clock differs by +0 s)"
    with caplog.at_level(logging.WARNING, logger="worker.ops.alerts"):
        assert Alerts(redis_db, window=600).for_refusal(Refusal("default", 405, "on Submit", Pause(405, skew, 0.0, "host-a")))
    (line,) = alert_lines(caplog)
    assert line.startswith(f"ALERT clock_skew [error] account default host host-a: {skew}: ")
    assert "set the host's clock right (NTP)" in line


def test_a_refusal_under_no_hosts_pause_raises_its_codes_alert(redis_db, caplog):
    alerts = Alerts(redis_db, window=600)
    with caplog.at_level(logging.WARNING, logger="worker.ops.alerts"):
        assert alerts.for_refusal(Refusal("default", 405, "on Submit"))
        assert alerts.for_refusal(Refusal("spare", 4050, "(account paused, send turned away)", Pause(4050, "", 0.0)))
        assert not alerts.for_refusal(Refusal("default", 4030, "on Submit"))
    assert [line.split(":")[0] for line in alert_lines(caplog)] == [
        "ALERT credentials_refused [error] account default", "ALERT account_frozen [error] account spare"]


def test_an_ip_code_on_getnum_names_the_host_it_was_seen_from(redis_db, caplog):
    with caplog.at_level(logging.WARNING, logger="worker.ops.alerts"):
        assert Alerts(redis_db, window=600).for_code(400, "default", "on GetNum (balance check)", "host-a")
        assert Alerts(redis_db, window=600).for_code(4050, "default", "on GetNum (balance check)", "host-a")
    ip, frozen = alert_lines(caplog)
    assert ip.startswith("ALERT ip_refused [error] account default host host-a: ") and "on host host-a" in ip
    assert frozen.startswith("ALERT account_frozen [error] account default: ")  # about the account, not the host
