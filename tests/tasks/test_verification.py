"""Verification end to end: start, the code read aloud (the sandbox's recorded Submit), check.

Real workers on the embedded default, Redis and RabbitMQ (``producer_stack`` in conftest). The
races (50 concurrent checks, wrong and right) are the store's, tested in
tests/worker/stores/test_verifications.py.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from config import ConfigError
from config.settings import load_producer_settings
from tasks.producer import InvalidPayload, Producer, Throttled
from tests.support import ROOT, Stack, submits, unique_mobile, wait_for
from tests.tasks.backends import producer_env
from worker.stores.verifications import CheckResult

STACK_ENV = {"VOICECODE_SECRET": "test-verify-secret-0f9e8d7c", "VERIFY_MAX_ATTEMPTS": "3", "MOBILE_THROTTLE": "2/60s"}
RESULT_TIMEOUT = 30


def spoken_code(sandbox, mobile: str) -> str:
    """The code the sandbox was asked to read aloud to ``mobile``: its one Submit's content."""
    [call] = wait_for(lambda: submits(sandbox, mobile), 20, what="the Submit")
    return call["content"]


def wrong(code: str) -> str:
    """A code of the same length that is not ``code``."""
    return f"{(int(code) + 1) % 10 ** len(code):0{len(code)}d}"


def standing_alone(code: str, text: str) -> bool:
    """``code`` as a number of its own in ``text``: not inside a longer number, a hex id or a fraction."""
    return re.search(rf"(?<![0-9A-Za-z.]){code}(?![0-9A-Za-z.])", text) is not None


def stored_texts(client: redis.Redis) -> Iterator[tuple[str, str]]:
    """Every key of ``client``'s database with its value, whatever its type, as (key, text)."""
    readers = {
        b"string": lambda key: [client.get(key)],
        b"hash": lambda key: [part for pair in client.hgetall(key).items() for part in pair],
        b"list": lambda key: client.lrange(key, 0, -1),
        b"set": lambda key: list(client.smembers(key)),
        b"zset": lambda key: client.zrange(key, 0, -1),
        b"stream": lambda key: [json.dumps(client.xrange(key), default=repr).encode()],
        b"none": lambda key: [],  # expired since the scan
    }
    for key in client.scan_iter(count=1000):
        values = readers[client.type(key)](key)
        yield key.decode(), b" ".join([key, *(v for v in values if v is not None)]).decode(errors="replace")


def redis_now(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000


def test_start_send_check_approves_once_and_the_code_is_kept_nowhere(producer_stack: Stack, producer: Producer,
                                                                       sandbox):
    mobile = unique_mobile("138")
    before = time.time()
    started = producer.verifications.start(mobile, ttl=120)
    code = spoken_code(sandbox, mobile)
    assert len(code) == 6 and code.isdigit()
    assert (started.mobile, started.status) == (f"{mobile[:3]}****{mobile[-4:]}", "pending")
    assert before + 119 < started.expires_at < time.time() + 121
    result = producer.result(started.task_id).get(timeout=RESULT_TIMEOUT)
    assert result["status"] == "submitted"

    assert producer.verifications.check(mobile, wrong(code)) == CheckResult("rejected", 2)
    assert producer.verifications.check(mobile, code) == CheckResult("approved")
    assert producer.verifications.check(mobile, code) == CheckResult("not_found")  # single use

    places = [("result", json.dumps(result)), ("worker log", producer_stack.workers[0].text()),
              *stored_texts(producer_stack.state)]  # the broker's too, when it is this Redis
    assert len(places) > 5
    assert [where for where, text in places if standing_alone(code, text)] == []
    assert [where for where, text in places if mobile in text] == []


def test_wrong_codes_until_locked_then_even_the_right_one_is_refused(producer: Producer, sandbox):
    mobile = unique_mobile("139")
    producer.verifications.start(mobile)
    code = spoken_code(sandbox, mobile)
    answers = [producer.verifications.check(mobile, wrong(code)) for _ in range(4)]
    assert answers == [CheckResult("rejected", 2), CheckResult("rejected", 1), CheckResult("rejected", 0),
                       CheckResult("locked")]  # VERIFY_MAX_ATTEMPTS=3
    assert producer.verifications.check(mobile, code) == CheckResult("locked")


def test_a_code_past_its_ttl_is_expired(producer: Producer, sandbox):
    mobile = unique_mobile("137")
    started = producer.verifications.start(mobile, ttl=2)
    code = spoken_code(sandbox, mobile)
    wait_for(lambda: redis_now(producer.state) > started.expires_at, 10, 0.1, "the expiry")
    assert producer.verifications.check(mobile, code) == CheckResult("expired")


def test_the_same_request_id_starts_once(producer: Producer, sandbox):
    mobile = unique_mobile("136")
    first = producer.verifications.start(mobile, request_id=f"signup:{mobile}")
    again = producer.verifications.start(mobile, request_id=f"signup:{mobile}")  # a double submit
    assert again == first
    code = spoken_code(sandbox, mobile)  # exactly one Submit, and its code still the one that works
    producer.result(first.task_id).get(timeout=RESULT_TIMEOUT)
    assert producer.verifications.start(mobile, request_id=f"signup:{mobile}") == first  # done: still the same
    assert len(submits(sandbox, mobile)) == 1
    assert producer.verifications.check(mobile, code) == CheckResult("approved")


def test_a_new_start_replaces_the_pending_one_and_the_throttle_holds(producer: Producer, sandbox):
    mobile = unique_mobile("135")
    producer.verifications.start(mobile)
    first_code = spoken_code(sandbox, mobile)
    producer.verifications.start(mobile)  # MOBILE_THROTTLE 2/60s: a second call is allowed
    wait_for(lambda: len(submits(sandbox, mobile)) == 2, 20, what="the second Submit")
    second_code = submits(sandbox, mobile)[1]["content"]
    with pytest.raises(Throttled):  # a third is not: refused before anything is replaced
        producer.verifications.start(mobile)
    if first_code != second_code:
        assert producer.verifications.check(mobile, first_code) == CheckResult("rejected", 2)
    assert producer.verifications.check(mobile, second_code) == CheckResult("approved")
    assert len(submits(sandbox, mobile)) == 2


@pytest.mark.parametrize("code", ["12345a", "123", "", None])
def test_a_malformed_code_is_invalid_and_costs_no_attempt(producer: Producer, sandbox, code):
    mobile = unique_mobile("134")
    producer.verifications.start(mobile)
    right = spoken_code(sandbox, mobile)
    with pytest.raises(InvalidPayload) as refused:
        producer.verifications.check(mobile, code)
    assert refused.value.field == "code"
    assert producer.verifications.check(mobile, wrong(right)) == CheckResult("rejected", 2)


def test_cli_verify_start_and_check(producer_stack: Stack, sandbox):
    mobile = unique_mobile("133")

    def voicecode(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", "verify", *args], cwd=ROOT,
                              env=producer_env(producer_stack), capture_output=True, text=True, timeout=60)

    start = voicecode("start", mobile, "--ttl", "120", "--wait", "30")
    assert start.returncode == 0, start.stderr
    shown = json.loads(start.stdout)
    assert set(shown) == {"verification_id", "status", "mobile", "expires_at", "task_id", "result"}
    assert (shown["status"], shown["mobile"], shown["result"]["status"]) == \
           ("pending", f"{mobile[:3]}****{mobile[-4:]}", "submitted")
    code = spoken_code(sandbox, mobile)
    assert not standing_alone(code, start.stdout + start.stderr)

    rejected = voicecode("check", mobile, wrong(code))
    assert (rejected.returncode, json.loads(rejected.stdout)) == (1, {"status": "rejected", "attempts_left": 2})
    approved = voicecode("check", mobile, code)
    assert (approved.returncode, json.loads(approved.stdout)) == (0, {"status": "approved", "attempts_left": 0})


def test_verifying_without_a_secret_names_the_variable():
    producer = Producer(load_producer_settings({"REDIS_URL": "redis://127.0.0.1:9/0"}))  # never reached
    for verify in (lambda: producer.verifications.start("13800138000"),
                   lambda: producer.verifications.check("13800138000", "123456")):
        with pytest.raises(ConfigError) as refused:
            verify()
        assert refused.value.variable == "VOICECODE_SECRET"
    done = subprocess.run([sys.executable, "-m", "cli", "verify", "check", "13800138000", "123456"], cwd=ROOT,
                          env={"PATH": os.environ["PATH"], "VOICECODE_ENV_FILE": os.devnull},
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.startswith("voicecode: configuration error: VOICECODE_SECRET: not set")


@pytest.mark.parametrize("behind", ["stopped", "backlog"])
def test_guesses_stay_within_the_budget_of_accepted_starts_whatever_the_workers_do(
        producer_stack: Stack, producer: Producer, sandbox, behind):
    """A bot loops start + guesses on one number while the workers are stopped (SIGSTOP) or behind a
    backlog on a 10/s account: starts are counted where they are accepted, so at most the throttle's
    (2/60s) are, and each renews at most VERIFY_MAX_ATTEMPTS (3) guesses."""
    mobile, account = unique_mobile("139"), "slow"  # slow: 10/s
    worker = producer_stack.workers[0]
    if behind == "stopped":
        worker.process.send_signal(signal.SIGSTOP)
    else:
        for _ in range(50):
            producer.enqueue(unique_mobile("137"), "1234", account=account)
    try:
        started = throttled = evaluated = 0
        for attempt in range(200):
            try:
                producer.verifications.start(mobile, account=account)
                started += 1
            except Throttled:
                throttled += 1
            for guess in range(6):
                if producer.verifications.check(mobile, f"{attempt:03d}{guess:03d}").status in ("rejected", "approved"):
                    evaluated += 1
    finally:
        if behind == "stopped":
            worker.process.send_signal(signal.SIGCONT)
    print(f"\n[brute force, workers {behind}] starts accepted {started}, refused {throttled}, "
          f"guesses evaluated {evaluated} of {200 * 6}")
    assert started == 2 and throttled == 198
    assert evaluated <= started * 3
