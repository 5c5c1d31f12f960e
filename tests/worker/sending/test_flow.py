"""The send flow without Celery: a Sender over the real stores (Redis) and the sandbox over HTTP."""
from __future__ import annotations

import socket
import time

import pytest

from config.settings import load_settings
from tests.support import base_env, submits, unique_mobile
from tests.worker.conftest import TEST_DB
from worker.sending.flow import Done, Park, RetryIn, Sender
from worker.sending.request import VoiceCodeRequest
from worker.stores import Stores


@pytest.fixture
def sender(redis_db, fresh_sandbox) -> Sender:
    url = f"redis://127.0.0.1:6379/{TEST_DB}"
    env = base_env(fresh_sandbox.url, CELERY_BROKER_URL=url, REDIS_URL=url, MOBILE_THROTTLE="1/60s")
    settings = load_settings(env)
    return Sender(settings, Stores.connect(settings))


def request(mobile: str, request_id: str = "r-1", account: str = "default", ttl: int = 60) -> VoiceCodeRequest:
    return VoiceCodeRequest(mobile, "4821", account, request_id, ttl)


def test_a_request_is_submitted_once_and_then_answers_duplicate(sender, fresh_sandbox):
    mobile = unique_mobile("138")
    first = sender.send(request(mobile), task_id="t-1")
    again = sender.send(request(mobile), task_id="t-2")
    assert isinstance(first, Done) and first.status == "submitted" and first.result["mobile"] == mobile[:3] + "****" + mobile[-4:]
    assert isinstance(again, Done) and again.status == "duplicate"
    assert len(submits(fresh_sandbox, mobile)) == 1


def test_a_failure_that_reached_ihuyi_keeps_the_numbers_throttle_but_not_for_its_own_retry(sender, fresh_sandbox):
    mobile = f"1990111{time.time_ns() % 10000:04d}"  # HTTP 500 once, then sent
    failed = sender.send(request(mobile), task_id="t-1")
    assert isinstance(failed, RetryIn)
    other = sender.send(request(mobile, "r-2"), task_id="t-2")
    assert isinstance(other, Done) and other.result["reason"] == "throttled"
    retried = sender.send(request(mobile), task_id="t-1")
    assert isinstance(retried, Done) and retried.status == "submitted" and retried.result["attempts"] == 2


def test_a_failure_before_anything_was_sent_gives_the_throttle_back(redis_db):
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # nothing listens there once closed
    url = f"redis://127.0.0.1:6379/{TEST_DB}"
    settings = load_settings(base_env(f"http://127.0.0.1:{port}/webservice/voice.php", CELERY_BROKER_URL=url,
                                      REDIS_URL=url, MOBILE_THROTTLE="1/60s"))
    stores = Stores.connect(settings)
    mobile = unique_mobile("138")
    assert isinstance(Sender(settings, stores).send(request(mobile), task_id="t-1"), RetryIn)
    assert stores.throttle.retry_after(mobile) == 0.0


def test_a_request_another_attempt_holds_is_not_sent_again(sender, fresh_sandbox):
    mobile = unique_mobile("138")
    sender.idempotency.begin("r-1", 60)  # a live attempt elsewhere
    outcome = sender.send(request(mobile), task_id="t-1")
    assert isinstance(outcome, RetryIn) and "another worker" in outcome.reason
    assert submits(fresh_sandbox, mobile) == []


def test_a_code_past_its_deadline_is_never_sent(sender, fresh_sandbox):
    mobile = unique_mobile("138")
    outcome = sender.send(request(mobile, ttl=1), task_id="t-1", enqueued_at=time.time() - 2)
    assert isinstance(outcome, Done) and outcome.status == "expired"
    assert submits(fresh_sandbox, mobile) == []


def test_a_permanent_refusal_is_dead_lettered_with_a_replay_record(sender, fresh_sandbox):
    outcome = sender.send(request("19900004030"), task_id="t-1")
    assert isinstance(outcome, Done) and (outcome.status, outcome.result["code"]) == ("dead_lettered", 4030)
    letter = sender.dead_letters.get(outcome.result["dead_letter"])
    assert letter.reason == "permanent" and letter.mobile == "199****4030"
    assert sender.dead_letters.payload(letter.id)["mobile"] == "19900004030"


def test_a_task_parked_for_its_slot_finds_it_in_the_record(sender, fresh_sandbox):
    """The "slow" account allows 10/s: with its next second already reserved, a send is parked."""
    rate = sender.settings.accounts["slow"].rate
    for _ in range(12):
        sender.limiter.reserve("slow", rate, max_wait=60)
    mobile = unique_mobile("138")
    parked = sender.send(request(mobile, account="slow"), task_id="t-1")
    assert isinstance(parked, Park) and submits(fresh_sandbox, mobile) == []
    back = sender.send(request(mobile, account="slow"), task_id="t-1")  # the parked copy, on its slot
    assert isinstance(back, Done) and back.status == "submitted" and back.result["attempts"] == 1
