"""Redis behind Sentinel: the URLs, the service on it, and a failover mid-run.

Every test here starts its own primary, replica and three sentinels on free loopback ports
(tests/servers.py, :class:`SentinelCluster`), never the session's Redis, and skips, saying why,
only where no redis-server binary can be had. Broker, results and state each sit on a database
of the one primary, as ``sentinel://`` URLs with ``REDIS_SENTINEL_MASTER``.

The failover scenario's numbers are printed (``pytest -s``) and written with the reliability
numbers (``<tmp>/reliability-numbers.json``, see docs/reliability.md).
"""
from __future__ import annotations

import json
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from config.settings import ConfigError, load_producer_settings, load_settings
from ihuyi.sandbox import Sandbox
from tasks.producer import Producer
from tests.servers import REDIS_HOST, SENTINEL_MASTER, RedisServer, Relay, SentinelCluster, sentinel_unavailable
from tests.support import ACCOUNTS, SANDBOX_ACCOUNTS, Backend, Stack, base_env, unique_mobile, wait_for
from tests.test_reliability import record, stop_and_keep_logs
from worker.stores.deadletters import DeadLetterStore

# -- the settings: no server needed ------------------------------------------------------------

SENTINELS = "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379;sentinel://10.0.0.3/2"


def _env(**env: str) -> dict[str, str]:
    return {"IHUYI_ACCOUNTS": json.dumps(ACCOUNTS), **env}


def test_sentinel_urls_need_the_master_name():
    with pytest.raises(ConfigError) as raised:
        load_settings(_env(CELERY_BROKER_URL=SENTINELS))
    assert raised.value.variable == "REDIS_SENTINEL_MASTER" and "\n" not in str(raised.value)
    with pytest.raises(ConfigError) as raised:
        load_producer_settings(_env(REDIS_URL=SENTINELS))
    assert raised.value.variable == "REDIS_SENTINEL_MASTER"


@pytest.mark.parametrize("variable", ["CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL"])
@pytest.mark.parametrize("url", ["sentinel://h:port", "sentinel://h:26379;redis://h2:6379",
                                 "sentinel://h:26379/zero", "sentinel://:26379"])
def test_a_bad_sentinel_url_is_one_line_naming_the_variable(variable, url):
    with pytest.raises(ConfigError) as raised:
        load_settings(_env(**{variable: url}, REDIS_SENTINEL_MASTER="mymaster"))
    assert raised.value.variable == variable and "\n" not in str(raised.value)
    assert "sentinel://host:26379;sentinel://host2:26379/0" in str(raised.value)


def test_a_broker_behind_sentinel_waits_for_one_replica_by_default():
    settings = load_settings(_env(CELERY_BROKER_URL=SENTINELS, REDIS_URL=SENTINELS,
                                  REDIS_SENTINEL_MASTER="mymaster"))
    assert (settings.sentinel_master, settings.wait_replicas) == ("mymaster", 1)
    assert load_settings(_env(CELERY_BROKER_URL="redis://h:6379/0")).wait_replicas == 0
    assert load_settings(_env(CELERY_BROKER_URL="redis://h:6379/0", REDIS_WAIT_REPLICAS="1")).wait_replicas == 1
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
        load_settings(_env(CELERY_BROKER_URL=SENTINELS, REDIS_SENTINEL_MASTER="my master"))


def test_the_celery_settings_name_the_master_for_broker_and_results():
    from worker.celeryconf import worker_conf

    conf = worker_conf(load_settings(_env(CELERY_BROKER_URL=SENTINELS, CELERY_RESULT_BACKEND=SENTINELS,
                                          REDIS_URL=SENTINELS, REDIS_SENTINEL_MASTER="mymaster")))
    assert conf["broker_transport_options"]["master_name"] == "mymaster"
    assert conf["broker_transport_options"]["wait_replicas"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == 120
    assert conf["result_backend_transport_options"]["master_name"] == "mymaster"


# -- on a primary, a replica and three sentinels ----------------------------------------------


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    why = sentinel_unavailable()
    if why:
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="vc-sentinel-", dir="/tmp") as tmp:
        trio = SentinelCluster(Path(tmp)).start()
        try:
            yield trio
        finally:
            trio.stop()


@contextmanager
def sentinel_stack(cluster: SentinelCluster, sandbox: Sandbox, name: str, **env: str) -> Iterator[Stack]:
    """Broker (db 1), results (db 2) and state (db 3) behind the cluster's sentinels; workers killed at the end."""
    urls = {"CELERY_BROKER_URL": cluster.url(1), "CELERY_RESULT_BACKEND": cluster.url(2),
            "REDIS_URL": cluster.url(3), "REDIS_SENTINEL_MASTER": SENTINEL_MASTER}
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        stack = Stack(Backend(name, urls, cluster.url(1), cluster.url(3)), base_env(sandbox.url, **urls, **env),
                      Path(tmp))
        try:
            yield stack
        finally:
            stop_and_keep_logs(stack, name)  # scanned for secrets with the reliability scenarios' logs


def producer_for(stack: Stack) -> Producer:
    return Producer(load_producer_settings(stack.env))


def submits_by_mobile(box: Sandbox) -> Counter:
    return Counter(c["mobile"] for c in box.calls("Submit"))


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_sends_on_redis_behind_sentinel(cluster):
    """Producer and worker on sentinel:// URLs: every send reaches ihuyi, its result is stored,
    and each publish was waited for (WAIT 1) until the replica held it."""
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=50, initial_balance=100000) as box:
        with sentinel_stack(cluster, box, "sentinel-sends") as stack:
            worker = stack.start_worker(concurrency=8)
            producer = producer_for(stack)
            mobiles = [unique_mobile("138") for _ in range(20)]
            handles = [producer.enqueue(mobile, "730518", ttl=120) for mobile in mobiles]
            assert [h.get(timeout=30)["status"] for h in handles] == ["submitted"] * len(handles)
            assert set(submits_by_mobile(box)) == set(mobiles)
            stats = cluster.client().info("commandstats")
            assert stats["cmdstat_wait"]["calls"] >= len(mobiles)
            with redis.Redis(port=cluster.replica.port, db=3) as replica:  # the state is on the replica too
                wait_for(lambda: replica.dbsize() > 0, 5, 0.05, "the state replicated")
            assert "taking Redis messages with the unacked-first script" in worker.text()
            assert "heartbeat" in "".join(k.decode() for k in cluster.client(1).keys("voicecode:heartbeat:*"))


class Pacer:
    """Enqueues through the producer API at a fixed rate, on a thread: which enqueues returned, and when."""

    def __init__(self, producer: Producer, mobiles: list[str], per_second: float) -> None:
        self.producer, self.mobiles, self.interval = producer, mobiles, 1 / per_second
        self.returned: dict[str, float] = {}  # mobile -> when its enqueue returned
        self.refused: dict[str, str] = {}  # mobile -> the error its enqueue raised
        self.slowest = 0.0  # the longest an enqueue took, returned or refused
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        for i, mobile in enumerate(self.mobiles):
            time.sleep(max(0.0, start + i * self.interval - time.monotonic()))
            began = time.monotonic()
            try:
                self.producer.enqueue(mobile, "730518", ttl=120)
            except Exception as exc:  # noqa: BLE001 - counted: a send the caller was told failed
                self.refused[mobile] = type(exc).__name__
            else:
                self.returned[mobile] = time.time()
            finally:
                self.slowest = max(self.slowest, time.monotonic() - began)


def failover_run(stack: Stack, box: Sandbox, name: str, fail: Callable[[], None],
                 promoted: Callable[[], bool], state: Callable[[], redis.Redis]) -> dict[str, Any]:
    """200 sends at 20/s through the producer API from two workers' start, ``fail()`` called
    after the 80th returned: every send whose enqueue returned reaches ihuyi, no more are sent
    twice than were in flight at the failure, sends resume within 15 s, no worker exits, no
    dead letter, at most one state-store alert per worker. The numbers are recorded under ``name``."""
    workers = [stack.start_worker(concurrency=16), stack.start_worker(concurrency=16)]
    pacer = Pacer(producer_for(stack), [unique_mobile("138") for _ in range(200)], 20)
    pacer.thread.start()
    wait_for(lambda: len(pacer.returned) >= 80, 30, 0.01, "80 sends enqueued")
    before = len(box.calls("Submit"))
    killed_at = time.time()
    fail()
    # Submits begun in the last ihuyi latency (0.3 s) and a margin before the kill
    in_flight = sum(1 for c in box.calls("Submit") if killed_at - 0.8 <= c["at"] <= killed_at)
    wait_for(promoted, 30, 0.1, "the replica promoted")
    pacer.thread.join(60)
    assert not pacer.thread.is_alive(), "an enqueue hung"
    accepted = pacer.returned
    wait_for(lambda: set(accepted) <= set(submits_by_mobile(box)), 90, 0.2, "every accepted send at ihuyi")
    time.sleep(3)  # late duplicates, if any, would come now
    counts = submits_by_mobile(box)
    lost = [m for m in accepted if counts[m] == 0]
    dupes = sum(n - 1 for n in counts.values() if n > 1)
    after = sorted(t for t in accepted.values() if t > killed_at)
    first_after = min((c["at"] for c in box.calls("Submit")
                       if c["mobile"] in accepted and accepted[c["mobile"]] > killed_at), default=None)
    log = "".join(w.text() for w in workers)
    numbers = dict(
        sends=len(pacer.mobiles), enqueue_returned=len(accepted), enqueue_refused=len(pacer.refused),
        refused_with=dict(Counter(pacer.refused.values())), submits_before_kill=before,
        in_flight_at_kill=in_flight, lost=len(lost), duplicate_submits=dupes,
        seconds_to_resume=None if first_after is None else round(first_after - killed_at, 1),
        first_enqueue_after_kill_s=round(after[0] - killed_at, 1) if after else None,
        slowest_enqueue_s=round(pacer.slowest, 2), worker_exits=sum(w.process.poll() is not None for w in workers),
        state_store_alerts=log.count("ALERT state_store_unavailable"), readonly_seen=log.count("READONLY"),
        dead_letters=len(DeadLetterStore(state()).list()))
    record(name, **numbers)
    assert not lost, f"{len(lost)} accepted sends never reached ihuyi"
    assert dupes <= in_flight, numbers
    assert first_after is not None and first_after - killed_at <= 15, numbers
    assert all(w.process.poll() is None for w in workers), numbers
    assert numbers["dead_letters"] == 0, numbers
    assert numbers["state_store_alerts"] <= len(workers), numbers  # alerted at most once per process
    return numbers


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_primary_killed_mid_run_loses_no_accepted_send(cluster):
    """The primary SIGKILLed mid-run; the sentinels promote the replica (see :func:`failover_run`)."""
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=300, initial_balance=100000) as box:
        with sentinel_stack(cluster, box, "sentinel-failover") as stack:
            failover_run(stack, box, "sentinel_primary_killed", cluster.primary.kill,
                         lambda: cluster.master_port() not in (None, cluster.primary.port), lambda: cluster.client(3))


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_one_endpoint_primary_replaced_by_its_replica_loses_no_accepted_send(short_tmp):
    """One address (a managed Redis's endpoint: a TCP relay here) for broker, results and state;
    the primary behind it SIGKILLed, the endpoint moved to the replica a second later (READONLY
    errors meanwhile), the replica promoted a second after that (see :func:`failover_run`)."""
    why = sentinel_unavailable()
    if why:
        pytest.skip(why)
    (short_tmp / "primary").mkdir()
    (short_tmp / "replica").mkdir()
    primary = RedisServer(short_tmp / "primary")
    replica = RedisServer(short_tmp / "replica", "--replicaof", REDIS_HOST, str(primary.port))
    relay = Relay(primary.port)
    try:
        primary.start()
        replica.start()
        with redis.Redis(port=replica.port) as client:
            wait_for(lambda: client.info("replication")["master_link_status"] == "up", 10, 0.05, "the replica in sync")

        def fail() -> None:
            primary.kill()
            time.sleep(1)
            relay.switch(replica.port)  # the endpoint moved before the promotion completed
            time.sleep(1)
            with redis.Redis(port=replica.port) as client:
                client.execute_command("REPLICAOF", "NO", "ONE")

        urls = {"CELERY_BROKER_URL": relay.url(1), "CELERY_RESULT_BACKEND": relay.url(2), "REDIS_URL": relay.url(3),
                "REDIS_WAIT_REPLICAS": "1"}
        with Sandbox(SANDBOX_ACCOUNTS, latency_ms=300, initial_balance=100000) as box:
            with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
                stack = Stack(Backend("one-endpoint", urls, relay.url(1), relay.url(3)), base_env(box.url, **urls),
                              Path(tmp))
                try:
                    failover_run(stack, box, "one_endpoint_primary_replaced", fail,
                                 lambda: redis.Redis(port=replica.port).info("replication")["role"] == "master",
                                 lambda: redis.Redis(port=replica.port, db=3))
                finally:
                    stop_and_keep_logs(stack, "one-endpoint-failover")
    finally:
        relay.stop()
        replica.kill()
        primary.kill()
