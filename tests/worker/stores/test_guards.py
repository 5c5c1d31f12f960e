"""The door's other limits against the real Redis: per requester, per account and day, per number range."""
from __future__ import annotations

import pytest
import redis

from config.settings import RangeGuard, Window
from worker.stores.guards import Door, Guards
from worker.stores.idempotency import IdempotencyStore, Reservation, task_id_for
from worker.stores.throttle import MobileThrottle

REQUESTER = [Window(5, 600)]


@pytest.fixture
def requests(redis_db: redis.Redis) -> IdempotencyStore:
    return IdempotencyStore(redis_db, lease_seconds=30)


def reserve(requests: IdempotencyStore, mobile: str, *, requester: str | None = None, account: str = "default",
            budget: int = 0, guard: RangeGuard | None = None, request_id: str | None = None) -> Reservation:
    request_id = request_id or f"r-{mobile}-{requester}"
    throttle = MobileThrottle(requests._redis, ())
    return requests.reserve(request_id, task_id_for(request_id), (mobile, "4821", account), (mobile, "4821", account),
                            throttle=(*throttle.keys(mobile), throttle.member(request_id)), windows=[],
                            door=Door(requester, account, mobile, REQUESTER, budget, guard))


def test_a_requester_gets_its_windows_worth_and_others_are_unaffected(requests):
    answers = [reserve(requests, f"139{i:08d}", requester="203.0.113.7") for i in range(20)]
    assert [a.status for a in answers] == ["new"] * 5 + ["throttled"] * 15
    assert all(a.limit == "requester" and 599 < a.retry_after <= 600 for a in answers[5:])
    assert reserve(requests, "13900000099", requester="198.51.100.1").status == "new"
    assert reserve(requests, "13900000098").status == "new"  # nobody said who asks: no requester limit


def test_a_requester_is_kept_only_as_an_hmac(requests, redis_db):
    reserve(requests, "13900000001", requester="user:13800138000")
    stored = b" ".join(redis_db.keys("*"))
    assert b"13800138000" not in stored and b"user:" not in stored


def test_an_account_at_its_budget_refuses_and_trips_once(requests, redis_db):
    guards = Guards(redis_db)
    assert [reserve(requests, f"137{i:08d}", account="spare", budget=3).status for i in range(3)] == ["new"] * 3
    refused = [reserve(requests, f"136{i:08d}", account="spare", budget=3) for i in range(3)]
    assert {(r.status, r.budget) for r in refused} == {("over_budget", 3)}
    assert reserve(requests, "13500000001", account="default", budget=3).status == "new"  # another account
    assert [(t.kind, t.name, t.value) for t in guards.take_trips()] == [("budget", "spare", 3)]
    assert guards.take_trips() == []  # taken once, and not tripped again today
    reserve(requests, "13500000002", account="spare", budget=3)
    assert guards.take_trips() == []
    assert guards.budget_use(["spare", "default", "none"]) == {"spare": 3, "default": 1, "none": 0}


def test_a_burst_across_one_range_trips_the_guard_and_blocks_it(requests, redis_db):
    guards, guard = Guards(redis_db), RangeGuard(10, 600, 900)
    answers = [reserve(requests, f"1380013{i:04d}", guard=guard) for i in range(15)]
    assert [a.status for a in answers] == ["new"] * 10 + ["throttled"] * 5
    assert all(a.limit == "range" and 890 < a.retry_after <= 900 for a in answers[10:])
    assert reserve(requests, "13800130000", guard=guard, request_id="again").status == "throttled"  # blocked
    assert reserve(requests, "13900140000", guard=guard).status == "new"  # another range
    assert [(t.kind, t.name, t.value) for t in guards.take_trips()] == [("range", "1380013", 900)]
    assert list(guards.blocked_ranges()) == ["1380013"]


def test_a_guard_without_a_block_alerts_and_admits(requests, redis_db):
    guards, guard = Guards(redis_db), RangeGuard(3, 600, 0)
    assert {reserve(requests, f"1380014{i:04d}", guard=guard).status for i in range(6)} == {"new"}
    assert [(t.kind, t.name, t.value) for t in guards.take_trips()] == [("range", "1380014", 0)]
    assert guards.blocked_ranges() == {}


def test_a_number_called_again_is_not_a_new_number_of_its_range(requests):
    guard = RangeGuard(2, 600, 900)
    for request in range(5):
        assert reserve(requests, "13800150001", guard=guard, request_id=f"again-{request}").status == "new"
    assert reserve(requests, "13800150002", guard=guard).status == "new"
    assert reserve(requests, "13800150003", guard=guard).status == "throttled"


def test_a_withdrawn_request_gives_its_requester_and_budget_counts_back(requests, redis_db):
    throttle, guards = MobileThrottle(redis_db, ()), Guards(redis_db)
    for i in range(5):
        assert reserve(requests, f"1370000{i:04d}", requester="203.0.113.9", account="spare", budget=5).status == "new"
    mobile = "13700000004"
    request_id = f"r-{mobile}-203.0.113.9"
    requests.withdraw(request_id, throttle=(throttle.keys(mobile)[0], throttle.member(request_id)),
                      door=Door("203.0.113.9", "spare", mobile, REQUESTER, 5))
    assert guards.budget_use(["spare"]) == {"spare": 4}
    assert reserve(requests, mobile, requester="203.0.113.9", account="spare", budget=5).status == "new"
    assert reserve(requests, "13700000099", requester="203.0.113.9", account="spare", budget=5).status == "throttled"
