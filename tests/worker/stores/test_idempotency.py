"""The request record: leases, the claim before a Submit, and outcomes that are never overwritten."""
from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from tests.servers import redis_client
from tests.support import wait_for
from worker.stores.heartbeats import Heartbeat
from worker.stores.idempotency import IdempotencyStore, Reservation, TaskResult, record_key, task_id_for
from worker.stores.throttle import MobileThrottle

RID = "login:42"


@pytest.fixture
def redis_db() -> Iterator[redis.Redis]:
    """Database 0, empty at the start and at the end: apart from the other stores' tests (13)."""
    with redis_client(0) as client:
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
    assert float(redis_db.hget(record_key(RID), "lease")) > attempt.now + 4


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
    assert redis_db.hget(record_key(RID), "status") == b"inflight"


def test_a_late_failure_never_turns_an_accepted_submit_into_anything_else(redis_db):
    """The first attempt timed out after sending; a redelivery was accepted meanwhile."""
    requests = store(redis_db, lease=0.2)
    first = requests.begin(RID, 300)
    wait_for(lambda: requests.begin(RID, 300).state == "go", 2, what="the lease to run out")
    assert requests.finish(RID, {"status": "submitted", "voiceid": "1"}).kept is None
    assert not requests.release(RID, first, sent=True)
    assert requests.finish(RID, {"status": "dead_lettered"}).kept == {"status": "submitted", "voiceid": "1"}
    assert requests.begin(RID, 300).result == {"status": "submitted", "voiceid": "1"}


def test_the_finish_stores_the_task_result_as_celerys_redis_backend_reads_and_publishes_it(redis_db):
    from celery import Celery

    backend = Celery("reader", backend="redis://127.0.0.1:1/0").backend  # only its key and its decoding
    task_id = str(uuid.uuid4())
    key = backend.get_key_for_task(task_id).decode()
    requests = store(redis_db)
    requests.begin(RID, 300)
    listener = redis_db.pubsub(ignore_subscribe_messages=True)
    listener.subscribe(key)
    wait_for(lambda: redis_db.pubsub_numsub(key)[0][1] == 1, 5, what="the subscription")
    result = {"status": "submitted", "voiceid": "7"}
    assert requests.finish(RID, result, TaskResult(key, task_id, 600)).kept is None
    meta = backend.decode_result(redis_db.get(key))
    assert (meta["status"], meta["result"], meta["task_id"], meta["traceback"]) == ("SUCCESS", result, task_id, None)
    assert meta["date_done"] is not None and 599 <= redis_db.ttl(key) <= 600
    published = wait_for(lambda: listener.get_message(timeout=0.1), 5, what="the published result")
    assert backend.decode_result(published["data"])["result"] == result
    listener.close()


def test_the_finish_acks_the_tasks_message_when_given_its_tag(redis_db):
    from worker.broker.transport import ack_keys

    keys = ack_keys("w1")
    for tag in ("t1", "t2"):
        redis_db.zadd(keys[0], {tag: 1.0})
        redis_db.hset(keys[1], tag, "[]")
        redis_db.hset(keys[2], tag, "w1")
        redis_db.sadd(keys[3], tag)
    requests = store(redis_db)
    requests.begin(RID, 300)
    requests.finish(RID, {"status": "submitted"}, TaskResult("celery-task-meta-x", "x", 600, ("t1", keys)))
    assert [redis_db.zrange(keys[0], 0, -1), redis_db.hkeys(keys[1]), redis_db.hkeys(keys[2]),
            redis_db.smembers(keys[3])] == [[b"t2"], [b"t2"], [b"t2"], {b"t2"}]


def test_a_finish_that_keeps_an_accepted_submit_stores_no_task_result(redis_db):
    requests = store(redis_db)
    requests.begin(RID, 300)
    requests.finish(RID, {"status": "submitted", "voiceid": "1"})
    assert requests.finish(RID, {"status": "expired"}, TaskResult("celery-task-meta-x", "x", 600)).kept is not None
    assert not redis_db.exists("celery-task-meta-x")


def test_the_finish_adds_the_deliverys_counters_even_beside_a_kept_submit_and_skips_one_it_cannot(redis_db):
    requests = store(redis_db)
    requests.begin(RID, 300)
    redis_db.set("counters:broken", "not a hash")
    counts = [("counters:a", "x", 2), ("counters:broken", "y", 1), ("counters:b", "sum_us", 1500)]
    finished = requests.finish(RID, {"status": "submitted", "voiceid": "1"}, counts=counts)
    assert (finished.kept, finished.uncounted) == (None, 1)
    assert requests.begin(RID, 300).result == {"status": "submitted", "voiceid": "1"}
    kept = requests.finish(RID, {"status": "expired"}, counts=[("counters:a", "x", 1)])
    assert (kept.kept, kept.uncounted) == ({"status": "submitted", "voiceid": "1"}, 0)
    assert (redis_db.hgetall("counters:a"), redis_db.hgetall("counters:b")) == ({b"x": b"3"}, {b"sum_us": b"1500"})


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
    assert 0 < redis_db.ttl(record_key(RID)) <= 86400


def test_a_lease_whose_holders_heartbeat_is_gone_is_taken_over_at_once(redis_db, heartbeats):
    """The holder was killed: its redelivered task goes now, not after the rest of the lease."""
    dead, live = heartbeats
    first = store(redis_db, heartbeat=dead).begin(RID, 300)
    assert redis_db.hget(record_key(RID), "holder") == dead.identity.encode()
    assert store(redis_db, heartbeat=live).begin(RID, 300).state == "busy"  # alive: it waits

    dead.stop()
    again = store(redis_db, heartbeat=live).begin(RID, 300)
    assert again.state == "go" and again.attempts == 2
    assert redis_db.hget(record_key(RID), "holder") == live.identity.encode()
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


def test_a_finished_request_stays_done_after_its_holder_dies(redis_db, heartbeats):
    """The finish leaves the last attempt's lease in the record: nothing reads it past 'inflight'."""
    holder, other = heartbeats
    requests = store(redis_db, heartbeat=holder)
    requests.begin(RID, 300)
    requests.finish(RID, {"status": "submitted"})
    redis_db.delete(holder.key)
    attempt = store(redis_db, heartbeat=other).begin(RID, 300)
    assert attempt.state == "done" and attempt.result == {"status": "submitted"}


# -- reserve: a new request accepted at the door --------------------------------------------

THROTTLE = ("voicecode:throttle:0123456789abcdef01234567", "voicecode:throttle:0123456789abcdef01234567:blocked")
WINDOWS = ["1", "60", "5", "3600"]
SEND = ("13800138000", "4821", "default")


def reserve(requests: IdempotencyStore, request_id: str, asked: tuple[str, ...] = SEND,
            windows: list[str] = WINDOWS) -> Reservation:
    return requests.reserve(request_id, task_id_for(request_id), asked, asked, windows=windows,
                            throttle=(*THROTTLE, MobileThrottle.member(request_id)))


def record_call(client: redis.Redis, seconds_ago: float = 0) -> None:
    """A call in the number's throttle log by another request."""
    seconds, micros = client.time()
    client.zadd(THROTTLE[0], {uuid.uuid4().hex: seconds + micros / 1_000_000 - seconds_ago})


def test_task_id_for_is_a_stable_uuid5() -> None:
    task_id = task_id_for("order-42")
    assert task_id == task_id_for("order-42") != task_id_for("order-43")
    assert uuid.UUID(task_id).version == 5
    assert task_id == "558974b6-9d82-55c9-9f10-e72caf470195"


def test_a_new_request_is_reserved_with_its_task_id_and_counted_once(redis_db):
    requests = store(redis_db)
    assert reserve(requests, "r1") == Reservation("new", task_id=task_id_for("r1"))
    assert redis_db.zcard(THROTTLE[0]) == 1  # counted at the door, not later by the worker
    assert reserve(requests, "r1") == Reservation("existing", task_id=task_id_for("r1"))
    assert redis_db.zcard(THROTTLE[0]) == 1


def test_the_same_request_again_is_existing_even_when_the_window_is_full(redis_db):
    requests = store(redis_db)
    assert reserve(requests, "r1").status == "new"
    record_call(redis_db)
    assert reserve(requests, "r1") == Reservation("existing", task_id=task_id_for("r1"))


def test_a_new_request_for_a_throttled_number_waits_and_counts_nothing(redis_db):
    requests = store(redis_db)
    record_call(redis_db, seconds_ago=20)
    answer = reserve(requests, "r2")
    assert answer.status == "throttled" and answer.task_id == ""
    assert 39 < answer.retry_after <= 40
    assert reserve(requests, "r2").status == "throttled"
    assert redis_db.zcard(THROTTLE[0]) == 1 and not redis_db.exists(requests.key("r2"))


def test_the_longest_wait_over_every_full_window(redis_db):
    for ago in (3000, 2000, 1000, 500, 100):
        record_call(redis_db, seconds_ago=ago)
    answer = reserve(store(redis_db), "r3")
    assert answer.status == "throttled"
    assert 599 < answer.retry_after <= 600


def test_no_windows_means_no_throttle(redis_db):
    record_call(redis_db)
    assert reserve(store(redis_db), "r1", windows=[]) == Reservation("new", task_id=task_id_for("r1"))


def test_a_block_refuses_a_new_request_whatever_the_windows(redis_db):
    redis_db.set(THROTTLE[1], "1", px=3_600_000)
    refused = reserve(store(redis_db), "r1", windows=[])
    assert refused.status == "throttled" and 3599 < refused.retry_after <= 3600


@pytest.mark.parametrize("other", [("13800138001", "4821", "default"), ("13800138000", "4822", "default"),
                                   ("13800138000", "4821", "spare"), ("verify", "13800138000", "default")])
def test_a_request_id_used_for_another_request_is_a_conflict_that_counts_nothing(redis_db, other):
    requests = store(redis_db)
    assert reserve(requests, "order-91").status == "new"
    assert reserve(requests, "order-91", other) == Reservation("conflict")
    assert redis_db.zcard(THROTTLE[0]) == 1


def test_a_delivery_of_another_message_under_a_reserved_id_is_a_conflict(redis_db):
    requests = store(redis_db)
    assert reserve(requests, "order-91").status == "new"
    assert requests.begin("order-91", 300, message=("13800138001", "4821", "default")).state == "conflict"
    assert requests.begin("order-91", 300, message=SEND).state == "go"


def test_a_first_delivery_without_a_reservation_takes_the_request_id(redis_db):
    requests = store(redis_db)
    first = requests.begin("by-name-1", 300, message=SEND, task_id="t-1")
    assert first.state == "go"
    assert requests.begin("by-name-1", 300, message=("13800138001", "4821", "default")).state == "conflict"
    assert reserve(requests, "by-name-1") == Reservation("existing", task_id="t-1")


def test_the_record_holds_no_request_id_number_or_code(redis_db):
    requests = store(redis_db)
    reserve(requests, "login:13900139000", ("13900139000", "4821", "default"))
    [key] = redis_db.keys("voicecode:request:*")
    stored = key + b"".join(k + v for k, v in redis_db.hgetall(key).items())
    assert b"13900139000" not in stored and b"4821" not in stored
    assert 86000 < redis_db.ttl(key) <= 86400


def test_processes_agree_on_the_fingerprint_key_and_adopt_a_new_one_after_a_flush(redis_db):
    first, second = store(redis_db), store(redis_db)
    assert reserve(first, "r1").status == "new"
    assert reserve(second, "r1").status == "existing"  # second adopted first's key on the way
    assert second.fingerprints.hex == first.fingerprints.hex
    redis_db.flushdb()  # the state Redis lost everything: whoever comes first sets the key again
    third = store(redis_db)
    assert reserve(third, "r2").status == "new"
    assert reserve(first, "r2").status == "existing" and first.fingerprints.hex == third.fingerprints.hex


def test_withdraw_lets_the_request_be_reserved_again_and_gives_its_call_back(redis_db):
    requests = store(redis_db)
    assert reserve(requests, "r1").status == "new"
    requests.withdraw("r1", throttle=(THROTTLE[0], MobileThrottle.member("r1")))
    assert reserve(requests, "r2").status == "new"  # the number's one call a minute was given back
    requests.withdraw("never-reserved", throttle=(THROTTLE[0], MobileThrottle.member("never-reserved")))
    assert reserve(requests, "r3").status == "throttled"  # r2's call stays


def test_racing_producers_reserve_one_request_once(redis_db):
    requests = store(redis_db)
    barrier = threading.Barrier(20)

    def run() -> str:
        barrier.wait()
        return reserve(requests, "r1").status

    with ThreadPoolExecutor(20) as pool:
        answers = Counter(f.result() for f in [pool.submit(run) for _ in range(20)])
    assert answers == {"new": 1, "existing": 19}
    assert redis_db.zcard(THROTTLE[0]) == 1


def test_racing_producers_with_new_request_ids_get_one_call_past_the_throttle(redis_db):
    requests = store(redis_db)
    barrier = threading.Barrier(20)

    def run(i: int) -> str:
        barrier.wait()
        return reserve(requests, f"start-{i}").status

    with ThreadPoolExecutor(20) as pool:
        answers = Counter(pool.map(run, range(20)))
    assert answers == {"new": 1, "throttled": 19}
