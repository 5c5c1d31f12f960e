"""Rate limits, per-number throttles and account protection, end to end with real workers.

Parametrized over the embedded default, Redis and RabbitMQ (``stack`` in conftest).
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from ihuyi.sandbox import Sandbox
from tests.conftest import require_servers
from tests.servers import PrivateVhost, redis_url
from tests.support import ACCOUNTS, APIID, APIKEY, SANDBOX_ACCOUNTS, Backend, Stack, base_env, make_backend, \
    submits, unique_mobile, wait_for
from tests.tasks.backends import own_stack
from worker.broker.messages import queue_for
from worker.stores.accounts import AccountStates

STACK_ENV = {"MOBILE_THROTTLE": "1/30s,2/60s"}
RESULT_TIMEOUT = 30


def result_of(async_result) -> dict:
    return async_result.get(timeout=RESULT_TIMEOUT)


def calls_for(sandbox, account: str) -> list[dict]:
    return [c for c in sandbox.calls("Submit") if c["account"] == ACCOUNTS[account]["apiid"]]


@pytest.fixture
def states(stack):
    states = AccountStates(stack.state)
    for name in ACCOUNTS:
        states.resume_everywhere(name)
    yield states
    for name in ACCOUNTS:
        states.resume_everywhere(name)


def test_throttled_task_is_dead_lettered_and_never_sent(stack, sandbox):
    mobile = unique_mobile("139")
    assert result_of(stack.send(mobile, "1234"))["status"] == "submitted"
    async_result = stack.send(mobile, "5678", foreign=True)  # by name: no producer-side check
    result = result_of(async_result)
    assert (result["status"], result["reason"], result["attempts"]) == ("dead_lettered", "throttled", 0)
    assert len(submits(sandbox, mobile)) == 1
    letter = stack.dead_letters.get(result["dead_letter"])
    assert letter.reason == "throttled" and "retry after" in letter.detail


def test_producer_refuses_a_throttled_number_with_retry_after(stack, sandbox):
    mobile = unique_mobile("158")
    assert stack.cli("send", mobile, "2468", "--wait", "30").returncode == 0
    refused = stack.cli("send", mobile, "2469")
    assert refused.returncode == 1
    match = re.fullmatch(r"voicecode: mobile: too many calls to this number; retry after (\d+) s\n", refused.stderr)
    assert match and 0 < int(match[1]) <= 30, refused.stderr
    assert len(submits(sandbox, mobile)) == 1


@pytest.mark.parametrize("code", [405, 4050, 4051, 408])  # 400 and 4052 pause one host: tests/worker/ops/test_pool.py
def test_account_scoped_code_pauses_the_account(stack, sandbox, states, code):
    sandbox.set_account(ACCOUNTS["spare"]["apiid"], forced_code=code)
    try:
        first = result_of(stack.send(unique_mobile("139"), "1111", account="spare"))
    finally:
        sandbox.set_account(ACCOUNTS["spare"]["apiid"], forced_code=None)
    assert (first["status"], first["code"]) == ("dead_lettered", code)
    assert states.paused("spare").code == code

    mobile = unique_mobile("139")
    second = result_of(stack.send(mobile, "2222", account="spare"))
    assert (second["status"], second["reason"], second["code"]) == ("dead_lettered", "account_paused", code)
    assert submits(sandbox, mobile) == []  # a paused account's task never reaches ihuyi
    assert result_of(stack.send(unique_mobile("139"), "3333"))["status"] == "submitted"  # other accounts go on


def test_manual_resume_through_the_cli(stack, sandbox, states):
    states.pause("spare", 4050, "账号被冻结")
    listed = stack.cli("accounts")
    assert re.search(r"^spare\s+paused \(4050\)", listed.stdout, re.M), listed.stdout
    assert stack.cli("accounts", "resume", "spare").stdout.strip() == "spare: resumed"
    assert re.search(r"^spare\s+active", stack.cli("accounts").stdout, re.M)
    assert result_of(stack.send(unique_mobile("139"), "4444", account="spare"))["status"] == "submitted"


def test_automatic_resume_after_a_balance_top_up(stack, sandbox, states):
    apiid = ACCOUNTS["spare"]["apiid"]
    sandbox.set_account(apiid, balance=0)
    assert result_of(stack.send(unique_mobile("139"), "5555", account="spare"))["code"] == 4051
    assert states.paused("spare").code == 4051
    probe = stack.client.send_task("probe_paused_accounts")
    assert probe.get(timeout=RESULT_TIMEOUT) == []  # still no balance: stays paused
    sandbox.set_account(apiid, balance=20)
    assert stack.client.send_task("probe_paused_accounts").get(timeout=RESULT_TIMEOUT) == ["spare"]
    assert states.paused("spare") is None
    assert result_of(stack.send(unique_mobile("139"), "6666", account="spare"))["status"] == "submitted"


def test_failover_sends_through_the_fallback_account(stack, sandbox, states):
    sandbox.set_account(ACCOUNTS["main"]["apiid"], forced_code=4050)
    try:
        assert result_of(stack.send(unique_mobile("139"), "7777", account="main"))["code"] == 4050
    finally:
        sandbox.set_account(ACCOUNTS["main"]["apiid"], forced_code=None)
    mobile = unique_mobile("139")
    result = result_of(stack.send(mobile, "8888", account="main"))
    assert (result["status"], result["account"]) == ("submitted", "backup")
    assert [c["account"] for c in submits(sandbox, mobile)] == [ACCOUNTS["backup"]["apiid"]]


def test_rate_limit_holds_across_worker_processes(stack, sandbox):
    stack.start_worker(name="second")
    since = max((c["at"] for c in sandbox.calls("Submit")), default=0)
    results = [stack.send(unique_mobile("139"), "9999", account="slow") for _ in range(40)]
    assert [result_of(r)["status"] for r in results] == ["submitted"] * 40
    arrivals = sorted(c["at"] for c in calls_for(sandbox, "slow") if c["at"] > since)
    assert len(arrivals) == 40
    busiest = max(sum(1 for t in arrivals if start <= t < start + 1) for start in arrivals)
    assert busiest <= 10 + 2  # 10/s with a burst of 2, pool-wide
    assert arrivals[-1] - arrivals[0] >= (40 - 2) / 10 * 0.9


#: An account whose slots come 50 ms apart, for a backlog that parks.
BACKLOG_ACCOUNTS = {"backlog": {"apiid": APIID, "apikey": APIKEY, "rate_limit": "20/s"}}
#: The backlog stacks' Redis databases (this one and the next): none of the module's stacks, whose
#: workers' parking movers would take these stacks' parked tasks.
BACKLOG_DB = 5


@contextmanager
def backlog_stack(backend_name: str, sandbox: Sandbox) -> Iterator[Stack]:
    """A stack serving only BACKLOG_ACCOUNTS, on RabbitMQ in a vhost of its own (what is left
    queued goes with it); no worker started yet."""
    require_servers(backend_name)
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp, ExitStack() as held:
        if backend_name == "redis":
            backend = make_backend("redis", Path(tmp), redis_db=BACKLOG_DB)
        else:
            vhost, state = held.enter_context(PrivateVhost("backlog")), redis_url(BACKLOG_DB + 1)
            backend = Backend(backend_name, {"CELERY_BROKER_URL": vhost.url, "REDIS_URL": state}, vhost.url, state)
        backend.flush()
        stack = Stack(backend, base_env(sandbox.url, **backend.env, IHUYI_ACCOUNTS=json.dumps(BACKLOG_ACCOUNTS)),
                      Path(tmp))
        try:
            yield stack
        finally:
            stack.stop_workers()
            backend.flush()


@pytest.mark.e2e
@pytest.mark.parametrize("backend_name", ["redis", "rabbitmq"])
def test_a_backlog_queued_at_once_keeps_its_slots(backend_name):
    """600 sends queued on the account's queue before a worker starts, at 20/s: all but the
    first are parked for their slots while the rest of the backlog is still queued. Each comes
    back on the account's due queue, not behind that backlog, and in time for its slot: the
    first 100 queued are sent among the first 120, without a gap. One that came back too late
    would take a new slot behind every task reserved by then, hundreds later."""
    tasks, first, window, rate = 600, 100, 120, 20
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=20, initial_balance=10**6) as box, backlog_stack(backend_name, box) as stack:
        mobiles = [unique_mobile("139") for _ in range(tasks)]
        for mobile in mobiles:
            stack.client.send_task("send_voice_code", (mobile, "4821"), {"account": "backlog"},
                                   queue=queue_for("backlog"), headers={"enqueued_at": time.time()})
        stack.start_worker(concurrency=16)
        wait_for(lambda: len(box.calls("Submit")) >= window, 60, 0.1, f"{window} Submits")
        sent = box.calls("Submit")[:window]
        late = set(mobiles[:first]) - {c["mobile"] for c in sent}
        assert not late, f"{len(late)} of the first {first} queued missed their slots"
        arrivals = sorted(c["at"] for c in sent)
        assert arrivals[-1] - arrivals[0] < (window - 1) / rate + 0.5


@pytest.mark.e2e
def test_a_worker_given_its_queues_consumes_their_due_queues():
    """A worker started with ``-Q`` for an account's queue also takes that account's parked tasks
    when they come due: 30 sends at 20/s, most of them parked, are all sent."""
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=20, initial_balance=10**6) as box, \
            own_stack("redis", box, "-Q", queue_for("backlog"), IHUYI_ACCOUNTS=json.dumps(BACKLOG_ACCOUNTS)) as stack:
        [worker] = stack.workers
        assert f".> {queue_for('backlog')}.due " in worker.text()
        pending = [stack.client.send_task("send_voice_code", (unique_mobile("139"), "4821"), {"account": "backlog"},
                                          queue=queue_for("backlog"), headers={"enqueued_at": time.time()})
                   for _ in range(30)]
        assert [r.get(timeout=30)["status"] for r in pending] == ["submitted"] * 30
