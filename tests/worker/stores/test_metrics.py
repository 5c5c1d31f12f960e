"""The pool-wide metrics store against a real Redis (database 6): exact counts from many clients, safe labels."""
from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest
import redis

from tests.servers import redis_client
from tests.worker.conftest import TEST_DB
from worker.stores.metrics import BUCKETS, OTHER, MetricsStore


ACCOUNTS = ("default", "backup.1")
HOSTILE = "13800138000"


@pytest.fixture
def client(redis_db: redis.Redis) -> redis.Redis:
    """The shared empty test database (tests/worker/conftest.py)."""
    return redis_db


def in_threads(count: int, work: Callable[[MetricsStore, int], None]) -> None:
    """Run ``work(store, i)`` in ``count`` threads, each with its own Redis client, started together."""
    start, errors = threading.Barrier(count), []

    def run(i: int) -> None:
        own = redis_client(TEST_DB)
        try:
            start.wait()
            work(MetricsStore(own, accounts=ACCOUNTS), i)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            own.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_outcomes_from_many_clients_add_up_exactly(client: redis.Redis) -> None:
    events = [(account, status, code) for account in ACCOUNTS
              for status, code in (("submitted", 2), ("dead_lettered", 4051), ("expired", None), ("duplicate", None))]

    def work(store: MetricsStore, i: int) -> None:
        for n in range(200):
            store.add(store.outcome(*events[(i + n) % len(events)]))

    in_threads(8, work)
    expected = Counter()
    for i in range(8):
        for n in range(200):
            account, status, code = events[(i + n) % len(events)]
            expected[(account, status, "none" if code is None else str(code))] += 1
    assert MetricsStore(client, accounts=ACCOUNTS).snapshot().outcomes == dict(expected)


def test_submit_histogram_is_cumulative_and_consistent_with_count_and_sum(client: redis.Redis) -> None:
    # Bounds themselves fall in their own bucket (le), just above them in the next.
    durations = [0.0, 0.05, 0.050001, 0.1, 0.3, 1.0, 2.5, 4.2, 10.0, 10.000001, 42.0]

    def work(store: MetricsStore, i: int) -> None:
        for seconds in durations:
            store.add(store.submit(ACCOUNTS[i % 2], seconds))

    in_threads(6, work)
    histograms = MetricsStore(client, accounts=ACCOUNTS).snapshot().submit
    assert set(histograms) == set(ACCOUNTS)
    for histogram in histograms.values():
        assert histogram.cumulative == tuple(3 * sum(d <= bound for d in durations) for bound in BUCKETS)
        assert list(histogram.cumulative) == sorted(histogram.cumulative)
        assert histogram.count == histogram.cumulative[-1] == 3 * len(durations)
        assert histogram.sum == pytest.approx(3 * sum(durations), abs=1e-6)


def test_rate_limit_waits_add_up(client: redis.Redis) -> None:
    def work(store: MetricsStore, i: int) -> None:
        for _ in range(100):
            store.add(store.rate_limit_wait("default", 0.125))

    in_threads(5, work)
    waits = MetricsStore(client, accounts=ACCOUNTS).snapshot().rate_limit_waits
    assert waits.keys() == {"default"}
    assert (waits["default"].count, waits["default"].seconds) == (500, 62.5)


def test_unknown_labels_become_other(client: redis.Redis) -> None:
    store = MetricsStore(client, accounts=ACCOUNTS)
    store.add(store.outcome(HOSTILE, "submitted", 2))
    store.add(store.outcome("default", HOSTILE, 2))
    store.add(store.outcome("default", "submitted", 13800138000))
    store.add(store.outcome("default", "submitted", 4821))  # a verification code passed by mistake
    store.add(store.outcome('de"fault\n', "submitted", None))
    store.add(store.submit(HOSTILE, 0.2))
    store.add(store.rate_limit_wait(HOSTILE, 1.5))

    snapshot = store.snapshot()
    assert snapshot.outcomes == {(OTHER, "submitted", "2"): 1, ("default", OTHER, "2"): 1,
                                 ("default", "submitted", OTHER): 2, (OTHER, "submitted", "none"): 1}
    assert snapshot.submit.keys() == {OTHER}
    assert snapshot.rate_limit_waits.keys() == {OTHER}
    assert HOSTILE not in repr(client.hgetall("voicecode:metrics:outcomes"))


def test_fields_are_relabelled_when_read(client: redis.Redis) -> None:
    """A field of an account no longer configured joins ``other``; a field never written by the store is skipped."""
    earlier = MetricsStore(client, accounts=("default", "retired"))
    earlier.add(earlier.outcome("retired", "submitted", 2))
    client.hset("voicecode:metrics:outcomes", mapping={f"{HOSTILE}|submitted|2": 4, "junk": 7})
    client.hset("voicecode:metrics:submit_seconds", mapping={f"{HOSTILE}|le=0.5": 1, f"{HOSTILE}|sum_us": 300000,
                                                             "default|le=0.3": 9})
    client.hset("voicecode:metrics:rate_limit_waits", mapping={f"{HOSTILE}|count": 2, f"{HOSTILE}|sum_us": 10})

    snapshot = MetricsStore(client, accounts=("default",)).snapshot()
    assert snapshot.outcomes == {(OTHER, "submitted", "2"): 5}
    assert snapshot.submit.keys() == {OTHER}
    assert (snapshot.submit[OTHER].count, snapshot.submit[OTHER].sum) == (1, 0.3)
    assert snapshot.rate_limit_waits[OTHER].count == 2


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), -0.001])
def test_a_duration_must_be_finite_and_not_negative(client: redis.Redis, seconds: float) -> None:
    store = MetricsStore(client, accounts=ACCOUNTS)
    with pytest.raises(ValueError):
        store.add(store.submit("default", seconds))
    with pytest.raises(ValueError):
        store.add(store.rate_limit_wait("default", seconds))
    assert client.dbsize() == 0


def test_configured_account_names_are_checked(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="account names"):
        MetricsStore(client, accounts=["default", 'x"y'])


def test_each_write_and_the_snapshot_is_one_round_trip(client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MetricsStore(client, accounts=ACCOUNTS)
    client.ping()  # the connection (and its handshake) exists before counting
    sends = []
    original = redis.connection.AbstractConnection.send_packed_command
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                        lambda self, *args, **kwargs: (sends.append(1), original(self, *args, **kwargs))[1])
    for write in (lambda: store.add(store.outcome("default", "submitted", 2)),
                  lambda: store.add(store.submit("default", 0.2)),
                  lambda: store.add(store.rate_limit_wait("default", 0.2)),
                  store.snapshot):
        sends.clear()
        write()
        assert len(sends) == 1


def test_a_sends_events_are_written_together_in_one_round_trip(client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    store = MetricsStore(client, accounts=ACCOUNTS)
    client.ping()
    sends = []
    original = redis.connection.AbstractConnection.send_packed_command
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command",
                        lambda self, *args, **kwargs: (sends.append(1), original(self, *args, **kwargs))[1])
    counts = [*store.submit("default", 0.2), *store.rate_limit_wait("default", 0.5),
              *store.outcome("default", "submitted", 2)]
    assert sends == []  # described, not sent
    store.add(counts)
    assert len(sends) == 1
    snapshot = store.snapshot()
    assert snapshot.outcomes == {("default", "submitted", "2"): 1}
    assert (snapshot.submit["default"].count, snapshot.rate_limit_waits["default"].count) == (1, 1)
