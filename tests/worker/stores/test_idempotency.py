"""The request record: leases, the claim before a Submit, and outcomes that are never overwritten."""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import require_servers
from tests.support import wait_for
from worker.stores.heartbeats import Heartbeat
from worker.stores.idempotency import KEY_PREFIX, IdempotencyStore

RID = "login:42"


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    """Database 0, empty at the start and at the end: apart from the other stores' tests (13)."""
    require_servers("redis")
    with redis.Redis(host="127.0.0.1", port=6379, db=0) as client:
        client.flushdb()
        yield client
        client.flushdb()


@pytest.fixture
def heartbeats() -> Iterator[list[Heartbeat]]:
    """Two worker processes' heartbeats, stopped at the end."""
    beats = [Heartbeat(), Heartbeat()]
    yield beats
    for beat in beats:
        beat.stop()


def store(redis_db, lease: float = 30.0, heartbeat: Heartbeat | None = None) -> IdempotencyStore:
    return IdempotencyStore(redis_db, lease_seconds=lease, heartbeat=heartbeat)


def test_a_second_attempt_while_the_first_holds_the_lease_is_busy(redis_db):
    requests = store(redis_db)
    first = requests.begin(RID, 300)
    assert first.state == "go" and first.attempts == 1 and first.token
    second = requests.begin(RID, 300)
    assert second.state == "busy" and 29 < second.wait <= 30


def test_the_claim_renews_the_lease_and_says_how_long_the_code_has_left(redis_db):
    requests = store(redis_db, lease=5)
    attempt = requests.begin(RID, 300, time.time() - 100)
    claim = requests.claim(RID, attempt)
    assert claim.state == "go" and 199 < claim.remaining <= 200
    assert float(redis_db.hget(KEY_PREFIX + RID, "lease")) > attempt.now + 4


def test_no_claim_after_the_codes_deadline(redis_db):
    requests = store(redis_db)
    attempt = requests.begin(RID, 1, time.time() - 0.7)
    assert attempt.state == "go"
    wait_for(lambda: requests.claim(RID, attempt).state == "expired", 2, what="the claim refused past the deadline")


def test_an_attempt_whose_lease_was_taken_over_can_neither_claim_nor_release(redis_db):
    requests = store(redis_db, lease=0.2)
    stale = requests.begin(RID, 300)
    wait_for(lambda: requests.begin(RID, 300).state == "go", 2, what="the lease to run out")
    assert requests.claim(RID, stale).state == "lost"
    assert not requests.release(RID, stale, sent=True)
    assert redis_db.hget(KEY_PREFIX + RID, "status") == b"inflight"


def test_a_late_failure_never_turns_an_accepted_submit_into_anything_else(redis_db):
    """The first attempt timed out after sending; a redelivery was accepted meanwhile."""
    requests = store(redis_db, lease=0.2)
    first = requests.begin(RID, 300)
    wait_for(lambda: requests.begin(RID, 300).state == "go", 2, what="the lease to run out")
    assert requests.finish(RID, {"status": "submitted", "voiceid": "1"}) is None
    assert not requests.release(RID, first, sent=True)
    assert requests.finish(RID, {"status": "dead_lettered"}) == {"status": "submitted", "voiceid": "1"}
    assert requests.begin(RID, 300).result == {"status": "submitted", "voiceid": "1"}


def test_an_attempt_that_sent_nothing_is_not_counted(redis_db):
    requests = store(redis_db)
    attempt = requests.begin(RID, 300)
    assert requests.release(RID, attempt, sent=False)
    assert requests.begin(RID, 300).attempts == 1


def test_a_parked_slot_is_found_by_the_next_attempt_only(redis_db):
    requests = store(redis_db)
    attempt = requests.begin(RID, 300)
    requests.release(RID, attempt, sent=False, slot=("default", 5.0))
    again = requests.begin(RID, 300)
    assert again.slot is not None and again.slot.account == "default"
    assert again.slot.at == pytest.approx(again.now + 5.0, abs=0.5)  # on the Redis server's clock
    requests.release(RID, again, sent=False)
    assert requests.begin(RID, 300).slot is None


def test_the_record_always_expires(redis_db):
    requests = store(redis_db)
    requests.begin(RID, 300, time.time())
    assert 0 < redis_db.ttl(KEY_PREFIX + RID) <= 86400


def test_a_lease_whose_holders_heartbeat_is_gone_is_taken_over_at_once(redis_db, heartbeats):
    """The holder was killed: its redelivered task goes now, not after the rest of the lease."""
    dead, live = heartbeats
    first = store(redis_db, heartbeat=dead).begin(RID, 300)
    assert redis_db.hget(KEY_PREFIX + RID, "holder") == dead.identity.encode()
    assert store(redis_db, heartbeat=live).begin(RID, 300).state == "busy"  # alive: it waits

    dead.stop()
    again = store(redis_db, heartbeat=live).begin(RID, 300)
    assert again.state == "go" and again.attempts == 2
    assert redis_db.hget(KEY_PREFIX + RID, "holder") == live.identity.encode()
    assert store(redis_db, heartbeat=dead).claim(RID, first).state == "lost"


def test_a_lease_without_a_holder_runs_its_full_time(redis_db):
    """A store given no heartbeat names no holder: its leases hold until they run out, as before."""
    store(redis_db).begin(RID, 300)
    assert store(redis_db).begin(RID, 300).state == "busy"


def test_a_holder_whose_heartbeat_redis_lost_is_given_one_by_its_next_lease(redis_db, heartbeats):
    """A restarted or flushed Redis: a lease must not name a holder without a heartbeat."""
    holder, other = heartbeats
    requests = store(redis_db, heartbeat=holder)
    requests.begin("login:1", 300)
    redis_db.delete(holder.key)
    requests.begin(RID, 300)
    assert redis_db.exists(holder.key)
    assert store(redis_db, heartbeat=other).begin(RID, 300).state == "busy"


def test_a_finished_request_names_no_holder(redis_db, heartbeats):
    requests = store(redis_db, heartbeat=heartbeats[0])
    requests.begin(RID, 300)
    requests.finish(RID, {"status": "submitted"})
    assert redis_db.hget(KEY_PREFIX + RID, "holder") is None
