"""Limits per requester, per account and day, and per number range, end to end: a web app's producer,
real workers on Redis and RabbitMQ, alerts at a real Sentry receiver."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator

import pytest

from config.settings import load_producer_settings
from tasks.producer import OverBudget, Producer, Throttled
from tests.sentry_receiver import SentryReceiver
from tests.support import Stack, submits, unique_mobile, wait_for
from tests.tasks.backends import own_stack, producer_env

pytestmark = pytest.mark.e2e
RESULT_TIMEOUT = 30
LIMITS = {"MOBILE_THROTTLE": "1/60s", "REQUESTER_THROTTLE": "5/10m,20/d", "RANGE_GUARD": "10/10m",
          "RANGE_GUARD_BLOCK": "900", "ACCOUNT_DAILY_BUDGET": "40", "ALERT_DEDUP_SECONDS": "600"}


@pytest.fixture(scope="module")
def receiver() -> Iterator[SentryReceiver]:
    with SentryReceiver() as receiver:
        yield receiver


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def guarded(request: pytest.FixtureRequest, sandbox, receiver) -> Iterator[Stack]:
    with own_stack(request.param, sandbox, SENTRY_DSN=receiver.dsn, **LIMITS) as stack:
        yield stack


@pytest.fixture(scope="module")
def producer(guarded: Stack) -> Producer:
    """A web app's producer: told none of the limits, it checks the ones the workers announce."""
    env = {k: v for k, v in producer_env(guarded).items() if k not in LIMITS}
    return Producer(load_producer_settings(env))


def alerts(receiver: SentryReceiver, kind: str, about: str) -> list[dict]:
    return [e for e in receiver.alerts() if e["fingerprint"] == ["voicecode", kind, about]]


def test_one_requester_looping_over_new_numbers_gets_its_windows_worth(producer: Producer, sandbox):
    bot, mobiles = "203.0.113.9", [unique_mobile("13") for _ in range(100)]
    answers = Counter()
    for mobile in mobiles:
        try:
            producer.enqueue(mobile, "4821", requester=bot)
            answers["accepted"] += 1
        except Throttled as exc:
            assert exc.limit == "requester" and exc.field == "requester" and 599 < exc.retry_after <= 600
            answers["refused"] += 1
    print(f"\n[requester] one requester over 100 new numbers: {dict(answers)}")
    assert answers == {"accepted": 5, "refused": 95}
    other = unique_mobile("13")
    assert producer.enqueue(other, "4821", requester="198.51.100.4").get(timeout=RESULT_TIMEOUT)["status"] == "submitted"
    wait_for(lambda: sum(len(submits(sandbox, m)) for m in mobiles) == 5, RESULT_TIMEOUT, what="the five calls")


def test_an_account_at_its_budget_refuses_the_next_request_and_alerts_once(guarded: Stack, producer: Producer,
                                                                           receiver: SentryReceiver):
    receiver.clear()
    for _ in range(40):
        producer.enqueue(unique_mobile("13"), "4821", account="spare")
    for _ in range(3):
        with pytest.raises(OverBudget) as refused:
            producer.enqueue(unique_mobile("13"), "4821", account="spare")
        assert refused.value.field == "account" and "daily budget of 40" in str(refused.value)
    for _ in range(2):  # the beat task, twice: the trip is alerted on once
        guarded.client.send_task("raise_guard_alerts").get(timeout=RESULT_TIMEOUT)
    raised = wait_for(lambda: alerts(receiver, "budget_reached", "spare"), 15, what="the budget alert")
    assert len(raised) == 1 and "daily budget of 40 calls" in json.dumps(raised[0])
    accounts = guarded.cli("accounts")
    assert accounts.returncode == 0 and "40/40" in accounts.stdout


def test_a_burst_across_one_range_trips_the_guard_and_another_range_is_unaffected(
        guarded: Stack, producer: Producer, receiver: SentryReceiver, sandbox):
    receiver.clear()
    prefix = unique_mobile("15")[:7]
    answers = Counter()
    for i in range(15):
        try:
            producer.enqueue(f"{prefix}{i:04d}", "4821")
            answers["accepted"] += 1
        except Throttled as exc:
            assert exc.limit == "range" and 890 < exc.retry_after <= 900
            answers["refused"] += 1
    print(f"\n[range guard] 15 numbers of one range: {dict(answers)}")
    assert answers == {"accepted": 10, "refused": 5}
    elsewhere = unique_mobile("18")
    assert producer.enqueue(elsewhere, "4821").get(timeout=RESULT_TIMEOUT)["status"] == "submitted"
    guarded.client.send_task("raise_guard_alerts").get(timeout=RESULT_TIMEOUT)
    raised = wait_for(lambda: alerts(receiver, "range_under_attack", f"{prefix}****"), 15, what="the range alert")
    assert len(raised) == 1
    assert all(f"{prefix}{i:04d}" not in json.dumps(e) for e in receiver.events() for i in range(15))
    accounts = guarded.cli("accounts")
    assert f"range {prefix}**** blocked" in accounts.stdout


def test_a_requester_named_by_name_is_limited_by_the_worker(guarded: Stack, sandbox):
    """A producer that does not use the API passes ``requester`` as a task kwarg: the worker holds it
    to the same windows, on the first delivery of each request."""
    mobiles = [unique_mobile("13") for _ in range(8)]
    results = [guarded.send(m, "4821", foreign=True, requester="by-name:198.51.100.77").get(timeout=RESULT_TIMEOUT)
               for m in mobiles]
    assert [r["status"] for r in results] == ["submitted"] * 5 + ["dead_lettered"] * 3
    assert {r["reason"] for r in results[5:]} == {"throttled"}
    assert sum(len(submits(sandbox, m)) for m in mobiles) == 5
    assert "198.51.100.77" not in json.dumps(results)
    letter = guarded.dead_letters.get(results[-1]["dead_letter"])
    assert "requester limit" in letter.detail and "198.51.100.77" not in json.dumps(letter.to_dict())
