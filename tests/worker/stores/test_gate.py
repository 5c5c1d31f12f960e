"""The send gate against the real Redis: every verdict of gate.lua, a slot reached late
(gate_late.lua) and a host refused on a Submit (gate_refused.lua)."""
from __future__ import annotations

import dataclasses
import time

import pytest

from config.settings import Account, Rate, Window
from worker.stores.gate import Policy, SendGate, Verdict
from tests.worker.stores.rules import RuleAccounts, RuleLimiter, RuleThrottle
from worker.stores.guards import Door, Guards
from worker.stores.idempotency import IdempotencyStore

HOST, OTHER_HOST = "host-a", "host-b"
MOBILE, OTHER_MOBILE = "13800138000", "13912345678"
CONFIGURED = {
    # one slot a minute: a second one is far
    "solo": Account("solo", "solo-id", "solo-key", Rate(1, 60.0, 1)),
    "main": Account("main", "main-id", "main-key", Rate(10, 1.0, 1), fallback="backup"),
    "backup": Account("backup", "backup-id", "backup-key", Rate(10, 1.0, 1)),
    # a slot every 0.1 s, and a burst of 1: the second is a short wait
    "fast": Account("fast", "fast-id", "fast-key", Rate(10, 1.0, 1)),
    # a slot every 0.5 s: waits long enough to tell apart on a busy machine
    "half": Account("half", "half-id", "half-key", Rate(2, 1.0, 1)),
}
POLICY = Policy(host=HOST, probe_every=0.3, max_hold=0.5, parked_late=0.2, hand_back_window=10.0,
                hand_back_delay=0.5)


@dataclasses.dataclass
class Parts:
    gate: SendGate
    requests: IdempotencyStore
    accounts: RuleAccounts
    throttle: RuleThrottle
    limiter: RuleLimiter

    def enter(self, rid: str = "r-1", mobile: str = MOBILE, account: str = "solo", ttl: int = 300,
              enqueued_at: float | None = None, policy: Policy = POLICY, door: Door | None = None) -> Verdict:
        return self.gate.enter(rid, mobile, account, ttl, enqueued_at, policy=policy,
                               message=(mobile, "4821", account), task_id=f"t-{rid}", door=door)


@pytest.fixture
def parts(redis_db) -> Parts:
    requests = IdempotencyStore(redis_db, lease_seconds=30)
    accounts = RuleAccounts(redis_db)
    throttle = RuleThrottle(redis_db, [Window(1, 60)])
    limiter = RuleLimiter(redis_db)
    gate = SendGate(redis_db, idempotency=requests, accounts=accounts, throttle=throttle, limiter=limiter,
                    configured=CONFIGURED)
    return Parts(gate, requests, accounts, throttle, limiter)


# -- what begin decides ends the attempt there ------------------------------------------------

def test_a_request_held_by_another_attempt_is_busy(parts):
    assert parts.enter().verdict == "go"
    again = parts.enter()
    assert again.verdict is None and again.attempt.state == "busy" and 29 < again.attempt.wait <= 30


def test_a_finished_request_is_done(parts):
    parts.enter()
    parts.requests.finish("r-1", {"status": "submitted", "voiceid": "v"})
    done = parts.enter()
    assert (done.verdict, done.attempt.state, done.attempt.result["voiceid"]) == (None, "done", "v")


def test_a_request_past_its_deadline_is_expired(parts):
    expired = parts.enter(ttl=1, enqueued_at=time.time() - 2)
    assert (expired.verdict, expired.attempt.state) == (None, "expired")


# -- the door's limits, for a request sent by task name that names who asks ----------------------

def by_name(requester: str = "203.0.113.7", budget: int = 0, mobile: str = MOBILE) -> Door:
    return Door(requester, "fast", mobile, [Window(2, 600)], budget)


def test_a_request_by_name_is_counted_against_its_requester_once(parts):
    first = parts.enter("r-1", account="fast", door=by_name())
    assert first.verdict == "go"
    parts.requests.release("r-1", first.attempt, sent=True)  # a retry: admitted already, not counted again
    assert parts.enter("r-1", account="fast", door=by_name()).verdict == "go"
    assert parts.enter("r-2", OTHER_MOBILE, account="fast", door=by_name(mobile=OTHER_MOBILE)).verdict == "go"
    refused = parts.enter("r-3", "13700000003", account="fast", door=by_name(mobile="13700000003"))
    assert (refused.verdict, refused.limit) == ("refused", "requester") and 599 < refused.seconds <= 600
    assert parts.throttle.retry_after("13700000003") == 0.0  # the number's call not counted either
    assert parts.enter("r-4", "13700000004", account="fast", door=by_name("198.51.100.1", mobile="13700000004"),
                       ).verdict == "go"  # another requester


def test_a_request_by_name_past_its_accounts_budget_is_refused(parts, redis_db):
    assert parts.enter("r-1", account="fast", door=by_name(budget=1)).verdict == "go"
    refused = parts.enter("r-2", OTHER_MOBILE, account="fast", door=by_name("198.51.100.2", 1, OTHER_MOBILE))
    assert (refused.verdict, refused.limit) == ("refused", "budget")
    assert Guards(redis_db).budget_use(["fast"]) == {"fast": 1}


def test_a_request_reserved_at_the_door_is_not_counted_again_by_name(parts):
    parts.requests.reserve("r-1", "t-r-1", (MOBILE, "4821", "fast"), (MOBILE, "4821", "fast"), windows=[],
                           throttle=(*parts.throttle.keys(MOBILE), parts.throttle.member("r-1")),
                           door=by_name(budget=1))  # the account's one request today
    assert parts.enter("r-1", account="fast", door=by_name(budget=1)).verdict == "go"


# -- the number and the rate limit -------------------------------------------------------------

def test_go_counts_the_numbers_call_and_reserves_a_slot(parts):
    verdict = parts.enter()
    assert (verdict.verdict, verdict.account, verdict.seconds, verdict.pause) == ("go", "solo", 0.0, None)
    assert verdict.ticket and verdict.attempt.state == "go" and verdict.attempt.attempts == 1
    assert 59 < parts.throttle.retry_after(MOBILE) <= 60  # counted
    assert not parts.limiter.reserve("solo", CONFIGURED["solo"].rate, max_wait=0).granted  # the slot taken


def test_throttled_counts_nothing(parts):
    parts.enter()
    tat = parts.limiter.reserve("fast", CONFIGURED["fast"].rate, max_wait=0)
    throttled = parts.enter("r-2", account="fast")  # the same number, another request
    assert throttled.verdict == "throttled" and 59 < throttled.seconds <= 60
    after = parts.limiter.reserve("fast", CONFIGURED["fast"].rate, max_wait=60)
    assert after.wait < 0.1 + 0.01 and tat.granted  # the gate took no slot: the next is one interval on


def test_late_when_no_slot_comes_before_the_deadline(parts):
    parts.enter()
    late = parts.enter("r-2", OTHER_MOBILE, ttl=30)
    assert late.verdict == "late" and 59 < late.seconds <= 60
    assert parts.throttle.retry_after(OTHER_MOBILE) == 0.0  # nothing counted


def test_a_far_slot_parks_the_task_with_the_slot_kept_in_the_record(parts):
    parts.enter()
    parked = parts.enter("r-2", OTHER_MOBILE)
    assert parked.verdict == "park" and 59 < parked.seconds <= 60
    again = parts.enter("r-2", OTHER_MOBILE)  # the lease was given back, the slot kept: parked again on it
    assert again.verdict == "park" and again.seconds <= parked.seconds and again.attempt.attempts == 1


def test_a_parked_task_back_on_time_sends_on_its_slot(parts):
    policy = dataclasses.replace(POLICY, max_hold=0.1)
    parts.enter(account="half", policy=policy)
    parked = parts.enter("r-2", OTHER_MOBILE, account="half", policy=policy)
    assert parked.verdict == "park" and 0.3 < parked.seconds <= 0.5
    time.sleep(parked.seconds - 0.05)
    back = parts.enter("r-2", OTHER_MOBILE, account="half", policy=policy)
    assert back.verdict == "slot" and back.seconds <= 0.05 and back.attempt.attempts == 1


def test_a_parked_task_back_too_late_takes_a_new_slot(parts):
    policy = dataclasses.replace(POLICY, max_hold=0.1, parked_late=0.05)
    parts.enter(account="half", policy=policy)
    parked = parts.enter("r-2", OTHER_MOBILE, account="half", policy=policy)
    assert parked.verdict == "park"
    time.sleep(parked.seconds + 0.6)  # past its slot by more than parked_late, and the account idle since
    back = parts.enter("r-2", OTHER_MOBILE, account="half", policy=policy)
    assert (back.verdict, back.seconds) == ("go", 0.0) and back.ticket


# -- pauses: probe, fallback, hand-back, paused -------------------------------------------------

def test_a_pool_pause_with_no_fallback_is_paused(parts):
    parts.accounts.pause("solo", 4050, "账号被冻结")
    paused = parts.enter()
    assert (paused.verdict, paused.account, paused.pause.code, paused.pause.msg, paused.pause.host) == (
        "paused", "solo", 4050, "账号被冻结", None)
    assert parts.throttle.retry_after(MOBILE) == 0.0  # nothing counted


def test_a_paused_account_sends_through_its_fallback(parts):
    parts.accounts.pause("main", 4050, "")
    verdict = parts.enter(account="main")
    assert (verdict.verdict, verdict.account, verdict.pause) == ("go", "backup", None)


def test_a_paused_fallback_is_no_way_out(parts):
    parts.accounts.pause("main", 4050, "")
    parts.accounts.pause("backup", 4052, "", host=HOST)
    paused = parts.enter(account="main")
    assert (paused.verdict, paused.account, paused.pause.code) == ("paused", "main", 4050)


def test_a_pause_of_this_host_hands_the_send_back_uncounted(parts):
    parts.accounts.pause("solo", 4052, "ip", host=HOST)
    handed = parts.enter()
    assert (handed.verdict, handed.seconds, handed.pause.code, handed.pause.host) == ("hand_back", 0.5, 4052, HOST)
    again = parts.enter(policy=dataclasses.replace(POLICY, host=OTHER_HOST))  # another host: the lease was given back
    assert again.verdict == "go" and again.attempt.attempts == 1


def test_past_the_hand_back_window_a_pause_of_this_host_is_paused(parts):
    parts.accounts.pause("solo", 4052, "ip", host=HOST)
    paused = parts.enter(policy=dataclasses.replace(POLICY, hand_back_window=0.0))
    assert (paused.verdict, paused.pause.host) == ("paused", HOST)


def test_no_hand_back_that_would_come_back_past_the_deadline(parts):
    parts.accounts.pause("solo", 4052, "ip", host=HOST)
    paused = parts.enter(ttl=1, enqueued_at=time.time() - 0.7)  # 0.3 s left, the delay is 0.5 s
    assert paused.verdict == "paused"


def test_the_pause_of_another_host_does_not_stop_this_one(parts):
    parts.accounts.pause("solo", 4052, "ip", host=OTHER_HOST)
    assert parts.enter().verdict == "go"


def test_one_caller_per_interval_probes_a_pause_of_its_host(parts):
    parts.accounts.pause("solo", 4052, "ip", host=HOST)
    assert parts.enter().verdict == "hand_back"  # paused just now: not yet
    time.sleep(0.35)
    probe = parts.enter("r-2", OTHER_MOBILE)
    assert (probe.verdict, probe.account, probe.pause.host) == ("probe", "solo", HOST)
    assert parts.enter("r-3", "13700137000").verdict == "hand_back"  # claimed: the others go on as paused
    again = parts.enter("r-2", OTHER_MOBILE)  # the prober's lease was given back: it enters again
    assert again.verdict == "hand_back" and again.attempt.attempts == 1
    time.sleep(0.35)
    assert parts.enter("r-4", "13600136000").verdict == "probe"


def test_a_pool_pause_is_never_probed_from_a_host(parts):
    parts.accounts.pause("solo", 4050, "frozen")
    parts.accounts.pause("solo", 4052, "ip", host=HOST)
    time.sleep(0.35)
    paused = parts.enter()
    assert (paused.verdict, paused.pause.code, paused.pause.host) == ("paused", 4050, None)


def test_while_another_caller_probes_the_fallback_sends(parts):
    parts.accounts.pause("main", 4052, "ip", host=HOST)
    time.sleep(0.35)
    assert parts.enter(account="main").verdict == "probe"
    verdict = parts.enter("r-2", OTHER_MOBILE, account="main")
    assert (verdict.verdict, verdict.account) == ("go", "backup")


# -- a slot reached late ----------------------------------------------------------------------

def test_a_late_slot_nobody_reserved_after_is_used_now(parts):
    verdict = parts.enter(account="half")
    time.sleep(0.3)
    late = parts.gate.late("r-1", verdict.attempt, "half", verdict.ticket, policy=POLICY)
    assert (late.verdict, late.seconds) == ("go", 0.0)
    following = parts.limiter.reserve("half", CONFIGURED["half"].rate, max_wait=60)
    assert 0.4 < following.wait <= 0.5  # one interval after the late Submit: no burst


def test_a_late_slot_others_reserved_after_is_reserved_anew_behind_them(parts):
    verdict = parts.enter(account="half")
    for _ in range(2):
        parts.limiter.reserve("half", CONFIGURED["half"].rate, max_wait=60)
    policy = dataclasses.replace(POLICY, max_hold=2)
    late = parts.gate.late("r-1", verdict.attempt, "half", verdict.ticket, policy=policy)
    assert late.verdict == "go" and 1.3 < late.seconds <= 1.5 and late.ticket not in ("", verdict.ticket)


def test_a_late_slot_whose_new_one_is_far_parks_with_it(parts):
    verdict = parts.enter()
    parts.limiter.reserve("solo", CONFIGURED["solo"].rate, max_wait=600)
    late = parts.gate.late("r-1", verdict.attempt, "solo", verdict.ticket, policy=POLICY)
    assert late.verdict == "park" and 119 < late.seconds <= 120
    back = parts.requests.begin("r-1", 300, message=(MOBILE, "4821", "solo"), task_id="t-r-1")
    assert back.slot.account == "solo" and back.attempts == 1  # the slot kept, the attempt not counted


def test_a_late_slot_with_none_left_before_the_deadline_is_late(parts):
    verdict = parts.enter(ttl=30)
    parts.limiter.reserve("solo", CONFIGURED["solo"].rate, max_wait=600)
    late = parts.gate.late("r-1", verdict.attempt, "solo", verdict.ticket, policy=POLICY)
    assert late.verdict == "late" and 119 < late.seconds <= 120


# -- ihuyi refused this host --------------------------------------------------------------------

def test_a_host_refused_pauses_it_there_and_hands_the_send_back(parts):
    verdict = parts.enter(account="fast")
    assert parts.gate.refused_here("r-1", verdict.attempt, "fast", 4052, "ip", policy=POLICY) == "hand_back"
    pause = parts.accounts.paused("fast", HOST)
    assert (pause.code, pause.msg, pause.host) == (4052, "ip", HOST) and parts.accounts.paused("fast") is None
    again = parts.enter(account="fast", policy=dataclasses.replace(POLICY, host=OTHER_HOST))
    assert again.verdict == "go" and again.attempt.attempts == 1  # given back, not counted


def test_a_host_refused_past_the_window_leaves_the_send_to_be_dead_lettered(parts):
    verdict = parts.enter()
    policy = dataclasses.replace(POLICY, hand_back_window=0.0)
    assert parts.gate.refused_here("r-1", verdict.attempt, "solo", 400, "ip", policy=policy) == "dead_letter"
    assert parts.accounts.paused("solo", HOST).code == 400
    assert parts.enter().attempt.state == "busy"  # still this attempt's, to finish
