"""The send flow without Celery: a Sender over the real stores (Redis) and the sandbox over HTTP."""
from __future__ import annotations

import dataclasses
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from config.settings import load_settings
from ihuyi.sandbox import Sandbox
from tests.servers import redis_url
from tests.support import ACCOUNTS, SANDBOX_ACCOUNTS, base_env, submits, unique_mobile
from tests.worker.conftest import TEST_DB
from tests.worker.stores.rules import RuleLimiter, RuleThrottle
from worker.sending import decide
from worker.sending.flow import Done, Park, Refusal, RetryIn, Sender
from worker.sending.request import VoiceCodeRequest
from worker.stores import Stores


@pytest.fixture
def sender(redis_db, fresh_sandbox) -> Sender:
    url = redis_url(TEST_DB)
    env = base_env(fresh_sandbox.url, CELERY_BROKER_URL=url, REDIS_URL=url, MOBILE_THROTTLE="1/60s")
    settings = load_settings(env)
    return Sender(settings, Stores.connect(settings))


def request(mobile: str, request_id: str = "r-1", account: str = "default", ttl: int = 60) -> VoiceCodeRequest:
    return VoiceCodeRequest(mobile, "4821", account, request_id, ttl)


def round_trips_and_submits(sender: Sender, account: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A list that records, in order, each round trip to Redis ("redis") and each Submit on ``account``."""
    events = []
    send_packed = redis.connection.AbstractConnection.send_packed_command
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                        lambda conn, *a, **kw: (events.append("redis"), send_packed(conn, *a, **kw))[1])
    submit = sender.clients[account].submit
    monkeypatch.setattr(sender.clients[account], "submit",
                        lambda *a, **kw: (events.append("Submit"), submit(*a, **kw))[1])
    return events


def retry_after(sender: Sender, mobile: str) -> float:
    """Seconds until ``mobile`` may be called again, as the sender's throttle and ihuyi's blocks say."""
    return RuleThrottle(sender.stores.redis, sender.settings.mobile_throttle).retry_after(mobile)


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
    url = redis_url(TEST_DB)
    settings = load_settings(base_env(f"http://127.0.0.1:{port}/webservice/voice.php", CELERY_BROKER_URL=url,
                                      REDIS_URL=url, MOBILE_THROTTLE="1/60s"))
    stores = Stores.connect(settings)
    mobile = unique_mobile("138")
    assert isinstance(Sender(settings, stores).send(request(mobile), task_id="t-1"), RetryIn)
    assert RuleThrottle(stores.redis, settings.mobile_throttle).retry_after(mobile) == 0.0


def test_a_request_another_attempt_holds_is_not_sent_again(sender, fresh_sandbox):
    mobile = unique_mobile("138")
    sender.stores.idempotency.begin("r-1", 60, message=(mobile, "4821", "default"))  # a live attempt elsewhere
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
    letter = sender.stores.dead_letters.get(outcome.result["dead_letter"])
    assert letter.reason == "permanent" and letter.mobile == "199****4030"
    assert sender.stores.dead_letters.payload(letter.id)["mobile"] == "19900004030"


def test_a_task_parked_for_its_slot_finds_it_in_the_record(sender, fresh_sandbox):
    """The "slow" account allows 10/s: with its next second already reserved, a send is parked."""
    rate = sender.settings.accounts["slow"].rate
    for _ in range(12):
        RuleLimiter(sender.stores.redis).reserve("slow", rate, max_wait=60)
    mobile = unique_mobile("138")
    parked = sender.send(request(mobile, account="slow"), task_id="t-1")
    assert isinstance(parked, Park) and submits(fresh_sandbox, mobile) == []
    early = sender.send(request(mobile, account="slow"), task_id="t-1")  # back before its time: parked again
    assert isinstance(early, Park) and early.seconds < parked.seconds and submits(fresh_sandbox, mobile) == []
    time.sleep(early.seconds)  # the parking lot's delay
    back = sender.send(request(mobile, account="slow"), task_id="t-1")  # the parked copy, on its slot
    assert isinstance(back, Done) and back.status == "submitted" and back.result["attempts"] == 1


def test_a_submit_long_after_the_gate_claims_the_request_first(sender, fresh_sandbox, monkeypatch):
    monkeypatch.setattr(decide, "CLAIM_AFTER_SECONDS", -1.0)  # as if the wait for the slot had been long
    claimed = []
    claim = sender.stores.idempotency.claim
    monkeypatch.setattr(sender.stores.idempotency, "claim", lambda *a: claimed.append(claim(*a)) or claimed[-1])
    outcome = sender.send(request(unique_mobile("138")), task_id="t-1")
    assert outcome.status == "submitted" and [c.state for c in claimed] == ["go"]


def test_a_lost_claim_sends_nothing_and_gives_the_number_back(sender, fresh_sandbox, monkeypatch):
    monkeypatch.setattr(decide, "CLAIM_AFTER_SECONDS", -1.0)
    claim = sender.stores.idempotency.claim

    def taken_over(request_id, attempt):  # another attempt took the request over during the wait
        sender.stores.redis.hset(sender.stores.idempotency.key(request_id), "owner", "another attempt")
        return claim(request_id, attempt)

    monkeypatch.setattr(sender.stores.idempotency, "claim", taken_over)
    mobile = unique_mobile("138")
    outcome = sender.send(request(mobile), task_id="t-1")
    assert isinstance(outcome, RetryIn) and outcome.reason == "another attempt took this request over"
    assert submits(fresh_sandbox, mobile) == [] and retry_after(sender, mobile) == 0.0


def test_a_slot_reached_late_is_used_in_one_more_round_trip(sender, fresh_sandbox, monkeypatch):
    monkeypatch.setattr(decide, "late_allowance", lambda rate: -1.0)  # every slot reached late
    sender.send(request(unique_mobile("138"), "warm-up", account="slow"), task_id="t-0")  # the scripts loaded
    time.sleep(0.2)  # the slots free again
    events = round_trips_and_submits(sender, "slow", monkeypatch)
    assert sender.send(request(unique_mobile("138"), account="slow"), task_id="t-1").status == "submitted"
    assert events == ["redis", "redis", "Submit", "redis"]  # the gate, the late use, the Submit, the finish


def test_a_slot_reached_late_behind_others_parks_for_a_new_one(sender, fresh_sandbox, monkeypatch):
    rate = sender.settings.accounts["slow"].rate  # 10/s, burst 2
    monkeypatch.setattr(decide, "late_allowance", lambda rate: -1.0)
    late = sender.stores.gate.late

    def behind_others(*args, **kwargs):  # the account's next second reserved while this thread stood still
        for _ in range(12):
            RuleLimiter(sender.stores.redis).reserve("slow", rate, max_wait=60)
        return late(*args, **kwargs)

    monkeypatch.setattr(sender.stores.gate, "late", behind_others)
    mobile = unique_mobile("138")
    parked = sender.send(request(mobile, account="slow"), task_id="t-1")
    assert isinstance(parked, Park) and 0.6 < parked.seconds <= 0.8 and submits(fresh_sandbox, mobile) == []
    monkeypatch.undo()
    time.sleep(parked.seconds)  # the parking lot's delay
    back = sender.send(request(mobile, account="slow"), task_id="t-1")  # the parked copy, on its new slot
    assert isinstance(back, Done) and back.status == "submitted" and back.result["attempts"] == 1


# -- what ihuyi refuses, by who it is about ---------------------------------------------------

HOST_A, HOST_B = "host-a", "host-b"


@pytest.fixture(scope="module")
def other_box() -> Iterator[Sandbox]:
    """A second ihuyi as one host sees it: set to refuse that host (its IP, its clock) while the first takes the other."""
    with Sandbox(SANDBOX_ACCOUNTS) as box:
        yield box


@pytest.fixture
def host_a(redis_db, other_box) -> Sender:
    """A sender on host A, which reaches ihuyi as ``other_box`` (reset, its clock right)."""
    other_box.reset()
    other_box.clock_offset = 0.0
    return sender_on(other_box, HOST_A)


def sender_on(box: Sandbox, host: str, **env: str) -> Sender:
    url = redis_url(TEST_DB)
    settings = load_settings(base_env(box.url, CELERY_BROKER_URL=url, REDIS_URL=url, MOBILE_THROTTLE="1/60s",
                                      VOICECODE_HOST=host, ACCOUNT_PROBE_SECONDS="1", **env))
    return Sender(settings, Stores.connect(settings))


@pytest.mark.parametrize(("code", "window"), [(4080, 60), (4081, 60), (4082, 86400), (4086, 3600)])
def test_a_number_ihuyi_calls_too_often_ends_throttled_and_is_blocked(sender, fresh_sandbox, code, window):
    mobile = f"1990000{code}"
    outcome = sender.send(request(mobile), task_id="t-1")
    assert isinstance(outcome, Done)
    assert (outcome.status, outcome.result["reason"], outcome.result["code"]) == ("dead_lettered", "throttled", code)
    assert sender.stores.accounts.paused("default", sender.settings.host) is None  # no pause
    assert outcome.refusal is None  # nothing for a person: no unknown_code, nor any alert
    assert window - 2 < retry_after(sender, mobile) <= window
    refused = sender.stores.idempotency.reserve("next", "t-2", (mobile,), (mobile,), windows=[],
                                         throttle=(*sender.stores.throttle.keys(mobile), "next"))
    assert refused.status == "throttled" and window - 2 < refused.retry_after <= window  # the next enqueue
    letter = sender.stores.dead_letters.get(outcome.result["dead_letter"])
    assert letter.reason == "throttled" and f"retry after {window} s" in letter.detail
    assert sender.metrics.snapshot().outcomes == {("default", "throttled", str(code)): 1}


@pytest.mark.parametrize("code", [400, 4052])
def test_a_hosts_ip_refused_pauses_that_host_only_and_another_host_sends(host_a, other_box, fresh_sandbox, code):
    other_box.set_account(ACCOUNTS["default"]["apiid"], forced_code=code)
    host_b = sender_on(fresh_sandbox, HOST_B)
    mobile = unique_mobile("138")
    handed_back = host_a.send(request(mobile), task_id="t-1")
    assert isinstance(handed_back, RetryIn) and "paused on this host" in handed_back.reason
    pause = host_a.stores.accounts.paused("default", HOST_A)
    assert (pause.code, pause.host) == (code, HOST_A)
    refusal = handed_back.refusal  # the alert it calls for names the host (worker/ops/alerts.py)
    assert (refusal.account, refusal.code, refusal.where, refusal.pause.host) == ("default", code, "on Submit", HOST_A)
    assert host_a.stores.accounts.paused("default") is None and host_a.stores.accounts.paused("default", HOST_B) is None

    again = host_b.send(request(mobile), task_id="t-1")  # the same request, on host B: sent
    assert isinstance(again, Done) and (again.status, again.result["attempts"]) == ("submitted", 1)
    other = unique_mobile("138")
    assert host_b.send(request(other, "r-2"), task_id="t-2").status == "submitted"  # host B goes on
    assert isinstance(host_a.send(request(unique_mobile("138"), "r-3"), task_id="t-3"), RetryIn)  # host A hands back
    assert [len(submits(box, m)) for box, m in ((fresh_sandbox, mobile), (other_box, mobile))] == [1, 1]


def test_a_host_paused_alone_dead_letters_after_the_hand_back_window(host_a, monkeypatch):
    host_a.stores.accounts.pause("default", 4052, "访问ip与备案ip不符", HOST_A)
    # As if this request had been handed back for 10 s: the gate is told no window is left.
    monkeypatch.setattr(host_a, "policy", dataclasses.replace(host_a.policy, hand_back_window=0.0))
    outcome = host_a.send(request(unique_mobile("138")), task_id="t-1")
    assert isinstance(outcome, Done)
    assert (outcome.result["reason"], outcome.result["code"], outcome.result["attempts"]) == ("account_paused", 4052, 0)
    assert (outcome.refusal.code, outcome.refusal.pause.host) == (4052, HOST_A)  # the pause recalled, naming the host


def test_a_host_probes_its_own_pause_and_sends_again(host_a, other_box):
    apiid = ACCOUNTS["default"]["apiid"]
    other_box.set_account(apiid, forced_code=4052)
    assert isinstance(host_a.send(request(unique_mobile("138")), task_id="t-1"), RetryIn)
    time.sleep(1.1)  # ACCOUNT_PROBE_SECONDS: the pause is old enough to probe
    assert isinstance(host_a.send(request(unique_mobile("138"), "r-2"), task_id="t-2"), RetryIn)  # probe refused too
    assert [c["reply"] for c in other_box.calls("GetNum")] == [4052]
    other_box.set_account(apiid, forced_code=None)  # the host's IP registered
    time.sleep(1.1)
    done = host_a.send(request(unique_mobile("138"), "r-3"), task_id="t-3")
    assert isinstance(done, Done) and done.status == "submitted"
    assert host_a.stores.accounts.paused("default", HOST_A) is None


def test_a_405_from_a_skewed_clock_pauses_this_host_and_says_by_how_much(host_a, other_box):
    other_box.clock_offset = -3600.0  # ihuyi an hour behind: this host an hour ahead
    outcome = host_a.send(request(unique_mobile("138")), task_id="t-1")
    assert isinstance(outcome, RetryIn)
    pause = host_a.stores.accounts.paused("default", HOST_A)
    said = f"clock skew on host {HOST_A} by 3600 s (ahead of ihuyi's clock; the state Redis's clock differs by +0 s)"
    assert pause.code == 405 and pause.msg == said  # a Date is whole seconds: the nearest one
    assert host_a.stores.accounts.paused("default") is None
    assert (outcome.refusal.code, outcome.refusal.pause.msg, outcome.refusal.pause.host) == (405, said, HOST_A)


def test_a_405_with_the_clocks_agreeing_pauses_the_account_for_the_pool(host_a, other_box):
    other_box.set_account(ACCOUNTS["default"]["apiid"], forced_code=405)
    outcome = host_a.send(request(unique_mobile("138")), task_id="t-1")
    assert isinstance(outcome, Done) and (outcome.result["reason"], outcome.result["code"]) == ("permanent", 405)
    assert host_a.stores.accounts.paused("default").code == 405 and host_a.stores.accounts.paused("default").host is None
    assert outcome.refusal == Refusal("default", 405, "on Submit")  # the code's alert: credentials_refused


def test_the_apikey_mode_never_blames_the_clock(redis_db, other_box):
    other_box.reset()
    other_box.clock_offset = -3600.0
    try:
        sender = sender_on(other_box, HOST_A, IHUYI_PASSWORD_MODE="apikey")
        other_box.set_account(ACCOUNTS["default"]["apiid"], forced_code=405)
        outcome = sender.send(request(unique_mobile("138")), task_id="t-1")
    finally:
        other_box.clock_offset = 0.0
    assert isinstance(outcome, Done) and sender.stores.accounts.paused("default").code == 405


# -- metrics -----------------------------------------------------------------------------------

def test_each_delivery_counts_in_one_round_trip(sender, fresh_sandbox, monkeypatch):
    written = []
    add, finish = sender.metrics.add, sender.stores.idempotency.finish
    monkeypatch.setattr(sender.metrics, "add", lambda counts: (written.append(("own", len(counts))), add(counts))[1])
    monkeypatch.setattr(sender.stores.idempotency, "finish",
                        lambda *a: (written.append(("with the finish", len(a[3]))), finish(*a))[1])
    mobile = f"1990111{time.time_ns() % 10000:04d}"  # HTTP 500 once, then sent
    assert isinstance(sender.send(request(mobile), task_id="t-1"), RetryIn)
    assert sender.send(request(mobile), task_id="t-1").status == "submitted"
    assert sender.send(request(mobile), task_id="t-1").status == "duplicate"
    # The Submit's two fields; then the Submit's two and the outcome with the finish; then the outcome.
    assert written == [("own", 2), ("with the finish", 3), ("own", 1)]
    snapshot = sender.metrics.snapshot()
    assert snapshot.outcomes == {("default", "submitted", "2"): 1, ("default", "duplicate", "2"): 1}
    assert snapshot.submit["default"].count == 2


@pytest.mark.parametrize("requester", [None, "203.0.113.7"])  # a request by task name that names who asks
def test_a_send_is_one_round_trip_before_the_submit_and_one_after(sender, fresh_sandbox, monkeypatch, requester):
    sender.send(request(unique_mobile("138"), "warm-up"), task_id="t-0", requester=requester)  # the scripts loaded
    events = round_trips_and_submits(sender, "default", monkeypatch)
    mobile = unique_mobile("138")
    outcome = sender.send(request(mobile), task_id="t-1", requester=requester)
    assert outcome.status == "submitted"
    assert events == ["redis", "Submit", "redis"]
    # the record was written in that last one
    assert sender.stores.idempotency.begin("r-1", 60, message=(mobile, "4821", "default")).state == "done"


def test_a_request_by_name_past_its_requesters_windows_is_dead_lettered_uncalled(sender, fresh_sandbox):
    mobiles = [unique_mobile("138") for _ in range(6)]  # the requester's windows: 5 in 10 minutes
    outcomes = [sender.send(request(m, f"r-{m}"), task_id=f"t-{m}", requester="by-name") for m in mobiles]
    assert [o.status for o in outcomes] == ["submitted"] * 5 + ["dead_lettered"]
    refused = outcomes[-1].result
    assert (refused["reason"], refused["attempts"]) == ("throttled", 0)
    assert "requester limit" in sender.stores.dead_letters.get(refused["dead_letter"]).detail
    assert submits(fresh_sandbox, mobiles[-1]) == []
    again = sender.send(request(mobiles[-1], f"r-{mobiles[-1]}"), task_id="t-again", requester="by-name")
    assert again.result["dead_letter"] == refused["dead_letter"]  # a redelivery: the stored result, not counted again


def test_a_send_is_recorded_after_the_redis_scripts_were_flushed(sender, fresh_sandbox):
    sender.send(request(unique_mobile("138"), "warm-up"), task_id="t-0")
    sender.stores.redis.script_flush()  # as after a restart of the state Redis
    mobile = unique_mobile("138")
    assert sender.send(request(mobile), task_id="t-1").status == "submitted"
    assert sender.stores.idempotency.begin("r-1", 60, message=(mobile, "4821", "default")).result["status"] == "submitted"
    assert sender.metrics.snapshot().outcomes[("default", "submitted", "2")] == 2


def test_rate_limit_waits_are_counted(sender, fresh_sandbox):
    rate = sender.settings.accounts["slow"].rate  # 10/s, burst 2
    for _ in range(3):
        RuleLimiter(sender.stores.redis).reserve("slow", rate, max_wait=60)
    assert sender.send(request(unique_mobile("138"), account="slow"), task_id="t-1").status == "submitted"
    waits = sender.metrics.snapshot().rate_limit_waits["slow"]
    assert waits.count == 1 and 0.1 < waits.seconds <= 0.25
