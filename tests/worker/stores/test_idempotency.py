"""The request record: leases, the claim before a Submit, and outcomes that are never overwritten."""
from __future__ import annotations

import time

from tests.support import wait_for
from worker.stores.idempotency import KEY_PREFIX, IdempotencyStore, Slot

RID = "login:42"


def store(redis_db, lease: float = 30.0) -> IdempotencyStore:
    return IdempotencyStore(redis_db, lease_seconds=lease)


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
    requests.release(RID, attempt, sent=False, slot=Slot("default", 1234.5))
    again = requests.begin(RID, 300)
    assert again.slot == Slot("default", 1234.5)
    requests.release(RID, again, sent=False)
    assert requests.begin(RID, 300).slot is None


def test_the_record_always_expires(redis_db):
    requests = store(redis_db)
    requests.begin(RID, 300, time.time())
    assert 0 < redis_db.ttl(KEY_PREFIX + RID) <= 86400
