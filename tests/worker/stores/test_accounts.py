"""Account protection state against the real Redis, and the GetNum probe against the real sandbox."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from ihuyi import IhuyiClient
from ihuyi.sandbox import Sandbox
from tests.worker.stores.rules import RuleAccounts
from worker.stores.accounts import AccountState, AccountStates, Pause, probe

APIID, APIKEY = "acct-id", "acct-key"
ACCOUNT_CODES = (400, 405, 4050, 4051, 4052, 408)


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    with Sandbox({APIID: APIKEY}) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(box: Sandbox) -> Sandbox:
    box.reset()
    return box


@pytest.fixture
def states(redis_db) -> RuleAccounts:
    return RuleAccounts(redis_db)


def client_for(sandbox: Sandbox, apikey: str = APIKEY) -> IhuyiClient:
    return IhuyiClient(sandbox.url, APIID, apikey, connect_timeout=1, read_timeout=2)


def test_pause_and_resume_say_whether_they_changed_anything(states):
    assert states.paused("a") is None
    assert states.pause("a", 4050, "账户被冻结") is True
    assert states.pause("a", 405, "later") is False
    pause = states.paused("a")
    assert pause == Pause(4050, "账户被冻结", pause.since)  # the first reason is kept
    assert time.time() - 1 < pause.since <= time.time() + 0.01
    assert states.paused("b") is None
    assert states.resume("a") is True
    assert states.resume("a") is False
    assert states.paused("a") is None


def test_snapshot_lists_what_is_known_in_order(states):
    states.pause("a", 4051, "余额不足")
    states.record_code("a", 4051)
    states.record_balance("a", 0)
    states.record_code("b", 2)
    a, b, c = states.snapshot(["a", "b", "c"])
    assert a.paused is not None and a.paused.code == 4051 and a.paused.msg == "余额不足"
    assert (a.last_code, a.balance) == (4051, 0)
    assert time.time() - 1 < a.balance_at <= time.time() + 0.01
    assert b == AccountState("b", None, 2, None, None)
    assert c == AccountState("c", None, None, None, None)
    assert states.snapshot([]) == []


def test_resume_keeps_the_last_code_and_balance(states):
    states.record_code("a", 405)
    states.record_balance("a", 12)
    states.pause("a", 405, "")
    states.resume("a")
    (a,) = states.snapshot(["a"])
    assert (a.paused, a.last_code, a.balance) == (None, 405, 12)


def test_state_is_per_prefix(redis_db):
    AccountStates(redis_db, prefix="one:").pause("a", 400, "")
    assert AccountStates(redis_db, prefix="two:").paused("a") is None


def test_probe_resumes_a_low_balance_account_only_after_a_top_up(states, sandbox):
    states.pause("a", 4051, "余额不足")
    sandbox.set_account(APIID, balance=0)
    assert probe(states, "a", client_for(sandbox).get_num) is False
    (a,) = states.snapshot(["a"])
    assert a.paused is not None and a.balance == 0
    sandbox.set_account(APIID, balance=50)
    assert probe(states, "a", client_for(sandbox).get_num) is True
    (a,) = states.snapshot(["a"])
    assert a.paused is None and a.balance == 50


@pytest.mark.parametrize("code", [c for c in ACCOUNT_CODES if c != 4051])
def test_probe_resumes_other_pauses_when_getnum_succeeds(states, sandbox, code):
    states.pause("a", code, "")
    sandbox.set_account(APIID, balance=0)  # an empty balance does not matter for these
    assert probe(states, "a", client_for(sandbox).get_num) is True
    assert states.paused("a") is None


def test_probe_keeps_a_frozen_account_paused(states, sandbox):
    states.pause("a", 4050, "账户被冻结")
    sandbox.set_account(APIID, frozen=True)
    assert probe(states, "a", client_for(sandbox).get_num) is False
    (a,) = states.snapshot(["a"])
    assert a.paused is not None and a.last_code == 4050 and a.balance is None
    sandbox.set_account(APIID, frozen=False)
    assert probe(states, "a", client_for(sandbox).get_num) is True


def test_probe_keeps_an_account_with_a_wrong_key_paused(states, sandbox):
    states.pause("a", 405, "")
    assert probe(states, "a", client_for(sandbox, apikey="wrong").get_num) is False
    assert states.snapshot(["a"])[0].last_code == 405


def test_probe_keeps_the_account_paused_when_ihuyi_is_unreachable(states):
    states.pause("a", 4051, "")
    unreachable = IhuyiClient("http://127.0.0.1:9/webservice/voice.php", APIID, APIKEY, connect_timeout=1)
    assert probe(states, "a", unreachable.get_num) is False
    (a,) = states.snapshot(["a"])
    assert a.paused is not None and a.last_code is None


def test_probe_leaves_an_account_that_is_not_paused_alone(states, sandbox):
    assert probe(states, "a", client_for(sandbox).get_num) is False
    assert sandbox.calls("GetNum") == []


# -- pauses of one host ----------------------------------------------------------------------

def test_a_hosts_pause_stops_that_host_only(states):
    assert states.pause("a", 4052, "访问ip与备案ip不符", host="host-a") is True
    assert states.pause("a", 400, "later", host="host-a") is False
    pause = states.paused("a", "host-a")
    assert (pause.code, pause.msg, pause.host) == (4052, "访问ip与备案ip不符", "host-a")
    assert states.paused("a", "host-b") is None
    assert states.paused("a") is None  # the pool is not paused
    assert states.resume("a") is False
    assert states.resume("a", "host-a") is True
    assert states.paused("a", "host-a") is None


def test_the_pools_pause_stops_every_host(states):
    states.pause("a", 4050, "账号被冻结")
    states.pause("a", 4052, "", host="host-a")
    assert states.paused("a", "host-b") == Pause(4050, "账号被冻结", states.paused("a").since)
    assert states.paused("a", "host-a").host is None  # the pool's comes first


def test_snapshot_and_resume_everywhere(states):
    states.pause("a", 4052, "ip", host="host-b")
    states.pause("a", 405, "clock skew on host host-a by 3600 s", host="host-a")
    (a,) = states.snapshot(["a"])
    assert a.paused is None
    assert [(p.host, p.code, p.msg) for p in a.host_pauses] == [
        ("host-a", 405, "clock skew on host host-a by 3600 s"), ("host-b", 4052, "ip")]
    assert states.resume_everywhere("a") is True
    assert states.snapshot(["a"])[0].host_pauses == () and states.resume_everywhere("a") is False


def test_one_probe_per_interval_once_the_pause_is_that_old(states, redis_db):
    states.pause("a", 4052, "", host="host-a")
    assert states.claim_probe("a", "host-a", every=0.3) is False  # paused just now: not yet
    assert states.claim_probe("a", "host-b", every=0.3) is False  # not paused there
    time.sleep(0.35)
    assert [states.claim_probe("a", "host-a", every=0.3) for _ in range(3)] == [True, False, False]
    time.sleep(0.35)
    assert states.claim_probe("a", "host-a", every=0.3) is True


def test_probe_resumes_a_hosts_pause_on_that_host_only(states, sandbox):
    states.pause("a", 4052, "", host="host-a")
    states.pause("a", 4052, "", host="host-b")
    assert probe(states, "a", client_for(sandbox).get_num, host="host-a") is True
    assert states.paused("a", "host-a") is None and states.paused("a", "host-b") is not None


def test_probe_of_a_host_leaves_the_pools_pause_alone(states, sandbox):
    states.pause("a", 4050, "")
    assert probe(states, "a", client_for(sandbox).get_num, host="host-a") is False
    assert sandbox.calls("GetNum") == [] and states.paused("a") is not None


def test_probe_keeps_a_host_paused_while_ihuyi_refuses_its_ip(states, sandbox):
    states.pause("a", 4052, "", host="host-a")
    sandbox.set_account(APIID, forced_code=4052)
    assert probe(states, "a", client_for(sandbox).get_num, host="host-a") is False
    assert states.paused("a", "host-a") is not None and states.snapshot(["a"])[0].last_code == 4052


def test_a_pause_of_the_pool_is_never_probed_from_a_host(states):
    states.pause("a", 4052, "", host="host-a")
    states.pause("a", 4050, "账号被冻结")
    time.sleep(0.35)
    assert states.claim_probe("a", "host-a", every=0.3) is False  # the pool's pause stops the host first
    states.resume("a")
    assert states.claim_probe("a", "host-a", every=0.3) is True
