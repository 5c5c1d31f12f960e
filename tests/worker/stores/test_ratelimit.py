"""Pool-wide GCRA rate limit against the real Redis, from one process and from several."""
from __future__ import annotations

import multiprocessing
import time

import pytest
import redis

from config.settings import Rate, parse_rate
from tests.servers import redis_url
from tests.worker.conftest import TEST_DB
from tests.worker.stores.rules import RuleLimiter

PROCESSES = 4
DURATION = 2.0
SHARED = Rate(20, 1.0, 5)


def test_burst_goes_at_once_then_the_limit_holds(redis_db):
    limiter = RuleLimiter(redis_db)
    rate = Rate(10, 60.0, 5)  # one slot every 6 s: nothing refills during the loop
    answers = [limiter.reserve("acct", rate, max_wait=0) for _ in range(20)]
    assert [a.granted for a in answers] == [True] * 5 + [False] * 15
    assert all(a.wait == 0 for a in answers[:5])
    assert all(5.9 < a.wait <= 6.0 for a in answers[5:])


def test_after_the_burst_one_slot_every_interval(redis_db):
    limiter = RuleLimiter(redis_db)
    rate = Rate(20, 1.0, 3)
    assert sum(limiter.reserve("acct", rate, max_wait=0).granted for _ in range(10)) == 3
    for _ in range(3):
        refused = limiter.reserve("acct", rate, max_wait=0)
        assert not refused.granted and 0 < refused.wait <= 0.05
        time.sleep(refused.wait)
        assert limiter.reserve("acct", rate, max_wait=0).granted
        assert not limiter.reserve("acct", rate, max_wait=0).granted


def test_reservations_are_queued_one_interval_apart(redis_db):
    limiter = RuleLimiter(redis_db)
    rate = Rate(10, 1.0, 5)
    slots = []
    for _ in range(100):
        asked = time.time()
        reservation = limiter.reserve("acct", rate, max_wait=60)
        assert reservation.granted
        slots.append(asked + reservation.wait)
    first = slots[0]
    assert all(abs(s - first) < 0.02 for s in slots[:5])
    gaps = [b - a for a, b in zip(slots[4:], slots[5:])]
    assert all(abs(g - 0.1) < 0.01 for g in gaps), gaps
    assert slots[-1] - first == pytest.approx(95 * 0.1, abs=0.02)


def test_by_default_never_more_than_n_in_any_window(redis_db):
    """``10/s`` with no burst given: slots a tenth of a second apart, from the first on."""
    rate = parse_rate("IHUYI_RATE_LIMIT", "10/s")
    assert rate.burst == 1
    limiter = RuleLimiter(redis_db)
    slots = []
    for _ in range(50):
        asked = time.time()
        slots.append(asked + limiter.reserve("acct", rate, max_wait=60).wait)
    # Any 11 slots span a second (give or take the few ms this client's clock adds): no window holds 11.
    assert min(b - a for a, b in zip(slots, slots[10:])) > 0.995
    assert all(abs(b - a - 0.1) < 0.01 for a, b in zip(slots, slots[1:]))


def test_a_refused_reservation_reserves_nothing(redis_db):
    limiter = RuleLimiter(redis_db)
    rate = Rate(1, 1.0, 1)
    assert limiter.reserve("acct", rate, max_wait=0).granted
    stored = redis_db.get("voicecode:rate:acct")
    refusals = [limiter.reserve("acct", rate, max_wait=0.5) for _ in range(10)]
    assert not any(r.granted for r in refusals)
    assert refusals[-1].wait <= refusals[0].wait <= 1.0
    assert redis_db.get("voicecode:rate:acct") == stored
    waited = limiter.reserve("acct", rate, max_wait=2)
    assert waited.granted and 0.9 < waited.wait <= 1.0


def test_state_expires_once_the_account_is_idle(redis_db):
    limiter = RuleLimiter(redis_db)
    limiter.reserve("acct", Rate(1, 60.0, 1), max_wait=0)
    assert 60_000 <= redis_db.pttl("voicecode:rate:acct") <= 61_000


def test_accounts_are_independent(redis_db):
    limiter = RuleLimiter(redis_db)
    rate = Rate(1, 60.0, 2)
    assert [limiter.reserve("a", rate, max_wait=0).granted for _ in range(3)] == [True, True, False]
    assert [limiter.reserve("b", rate, max_wait=0).granted for _ in range(3)] == [True, True, False]
    assert RuleLimiter(redis_db, prefix="other:").reserve("a", rate, max_wait=0).granted


# -- a slot used late -------------------------------------------------------------------------

def test_a_late_slot_nobody_reserved_after_moves_to_now_and_loses_nothing(redis_db):
    limiter = RuleLimiter(redis_db)
    rate = Rate(2, 1.0, 1)
    first = limiter.reserve("acct", rate, max_wait=60)
    assert first.granted and first.ticket
    time.sleep(0.3)  # woke 0.3 s after its slot, the account idle since
    late = limiter.use_late("acct", rate, first.ticket, max_wait=60)
    assert (late.granted, late.wait) == (True, 0.0)
    following = limiter.reserve("acct", rate, max_wait=60)
    assert 0.4 < following.wait <= 0.5  # one interval after the late use: counted as made now


def test_a_late_slot_others_reserved_after_is_given_a_new_one_behind_theirs(redis_db):
    limiter = RuleLimiter(redis_db)
    rate = Rate(2, 1.0, 1)
    first = limiter.reserve("acct", rate, max_wait=60)
    limiter.reserve("acct", rate, max_wait=60)  # counts on the first having gone at its time
    late = limiter.use_late("acct", rate, first.ticket, max_wait=60)
    assert late.granted and 0.8 < late.wait <= 1.0 and late.ticket != first.ticket
    assert not limiter.use_late("acct", rate, "", max_wait=1.2).granted  # no ticket: a new slot, beyond max_wait


def test_late_slots_used_together_go_at_the_rate_never_in_a_burst(redis_db):
    """Five slots 0.2 s apart, all missed (a stalled worker): used late together, in any order,
    they go one interval apart from now on, like any reservations."""
    limiter = RuleLimiter(redis_db)
    rate = Rate(5, 1.0, 1)
    reserved = [limiter.reserve("acct", rate, max_wait=60) for _ in range(5)]
    time.sleep(1.0)
    sends = []
    for reservation in (reserved[2], reserved[4], reserved[0], reserved[3], reserved[1]):
        asked = time.time()
        late = limiter.use_late("acct", rate, reservation.ticket, max_wait=60)
        assert late.granted
        sends.append(asked + late.wait)
    sends.sort()
    assert all(b - a > 0.18 for a, b in zip(sends, sends[1:])), sends
    assert sends[-1] - sends[0] == pytest.approx(0.8, abs=0.05)


def _hammer(barrier, results, account: str, url: str) -> None:
    """One worker process: reserve a slot, sleep until it, 'send'; until DURATION is over.

    ``url`` is the session's Redis: a spawned process does not share the parent's module state."""
    limiter = RuleLimiter(redis.Redis.from_url(url))
    barrier.wait()
    end, sends = time.time() + DURATION, []
    while time.time() < end:
        reservation = limiter.reserve(account, SHARED, max_wait=1.0)
        assert reservation.granted
        time.sleep(reservation.wait)
        sends.append(time.time())
    results.put(sends)


def test_several_processes_share_one_limit(redis_db):
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(barrier, results, "shared", redis_url(TEST_DB))) for _ in range(PROCESSES)]
    for p in procs:
        p.start()
    per_process = [results.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    sends = sorted(t for s in per_process for t in s)

    busiest = max(sum(1 for u in sends if t <= u < t + 1.0) for t in sends)
    span = sends[-1] - sends[0]
    assert busiest <= SHARED.limit + SHARED.burst
    assert len(sends) == pytest.approx(SHARED.burst + SHARED.limit * span, abs=2)
    assert span > DURATION - 0.2
    assert all(len(s) > 5 for s in per_process)  # every process got its share
