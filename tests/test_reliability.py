"""Faults, restarts, bad input, a hostile ihuyi and secrets, against real worker processes.

Each scenario builds its own sandbox (so call counts are its own, with a balance that will not
run out) and its own stack on databases 14/15 of the session's Redis (or a ``redis-server`` of
its own, to kill) and the session's RabbitMQ vhost (tests/servers.py), starts
worker processes with :meth:`Stack.start_worker`, injects the fault and then checks every task
it enqueued: its final state, its Submit calls at the sandbox, its deadline.

The numbers of the last run are printed (``pytest -s``) and written to
``<tmp>/reliability-numbers.json`` (see ``docs/reliability.md``). Every log a scenario left is
kept for :func:`test_secrets_never_leak`, which runs last and scans them all.
"""
from __future__ import annotations

import json
import re
import signal
import socket
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kombu
import pytest
import redis
import requests
from celery import Celery
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ihuyi.sandbox import Sandbox
from tests.conftest import require_servers
from tests.sentry_receiver import PUBLIC_KEY, SentryReceiver
from tests.servers import (RABBITMQ_HOST, RABBITMQ_PORT, RedisServer, amqp_url, free_port, rabbitmqctl, reachable,
                           redis_url)
from tests.stacks import start, stop
from tests.support import (ACCOUNTS, SANDBOX_ACCOUNTS, SECRETS, Backend, Stack, Worker, base_env, kill_group,
                           unique_mobile, wait_for)

pytestmark = [pytest.mark.timeout(240), pytest.mark.e2e]

RESULTS_DB = redis_url(15)  # the session's Redis: up before any test module is imported
#: Broker and state of the scenarios that do not kill their Redis.
SCENARIO_DB = redis_url(14)
#: The verification codes every scenario sends: scanned for (as whole numbers) in every log.
CODES = ("730518", "864209", "59174")
#: Every full mobile number the scenarios used, and every log they wrote, for the secrets scan.
USED_MOBILES: set[str] = set()
KEPT_LOGS: dict[str, str] = {}
NUMBERS: dict[str, dict] = {}
NUMBERS_FILE = Path(tempfile.gettempdir()) / "reliability-numbers.json"


# -- helpers ----------------------------------------------------------------------------------


def record(name: str, **numbers: object) -> None:
    NUMBERS[name] = numbers
    print(f"\n[reliability] {name}: {json.dumps(numbers)}")
    try:
        previous = json.loads(NUMBERS_FILE.read_text())
    except (OSError, ValueError):
        previous = {}
    NUMBERS_FILE.write_text(json.dumps({**previous, name: numbers}, indent=2))


LOG_COPIES = Path(tempfile.gettempdir()) / "vc-reliability-logs"


def keep_logs(stack: Stack, scenario: str) -> None:
    """Keep a scenario's logs for the secrets scan (and a copy on disk, to read after a failure)."""
    LOG_COPIES.mkdir(exist_ok=True)
    for log in stack.tmp.glob("*.log"):
        text = log.read_text(errors="replace")
        KEPT_LOGS[f"{scenario}/{log.name}"] = text
        (LOG_COPIES / f"{scenario}-{log.name}").write_text(text)


class PrivateRedis(RedisServer):
    """A ``redis-server`` of the scenario's own, to kill and restart (the session's Redis stays up)."""

    def shutdown_saving(self) -> None:
        """Stop after writing its data to disk: restarted, it has the same keys (an RDB-backed Redis)."""
        try:
            redis.Redis.from_url(self.url()).shutdown(save=True)
        except redis.ConnectionError:
            pass
        assert self.process is not None
        self.process.wait(10)


@pytest.fixture
def private(short_tmp: Path) -> Iterator[PrivateRedis]:
    """A started :class:`PrivateRedis`, killed after the test whatever happened to it."""
    server = PrivateRedis(short_tmp)
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def scenario_stack(name: str, sandbox: Sandbox, *, broker: str, state: str, result: str | None = None,
                   **env: str) -> Iterator[Stack]:
    """A stack on the given URLs; every worker killed and its logs kept at the end."""
    with tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        urls = {"CELERY_BROKER_URL": broker, "REDIS_URL": state}
        if result:
            urls["CELERY_RESULT_BACKEND"] = result
        backend = Backend(name, urls, broker, state)
        for url in {state, result or state}:
            if url:
                try:
                    redis.Redis.from_url(url).flushdb()
                except redis.ConnectionError:
                    pass
        if broker.startswith("amqp"):
            with kombu.Connection(broker) as conn:
                for queue in ["voicecode", *(f"voicecode.{a}" for a in ACCOUNTS)]:
                    try:
                        conn.channel().queue_purge(queue)
                    except conn.channel_errors:
                        pass
        stack = Stack(backend, base_env(sandbox.url, **urls, **env), Path(tmp))
        client = Celery("test-producer", broker=broker, backend=result or state)
        client.conf.update(task_default_queue="voicecode", result_serializer="json", accept_content=["json"],
                           broker_connection_retry_on_startup=True)
        stack._client = client  # results where the workers store them
        try:
            yield stack
        finally:
            stop_and_keep_logs(stack, name)


def stop_and_keep_logs(stack: Stack, name: str) -> None:
    """Stop every worker of ``stack`` (killed if it lingers) and keep its logs under ``name``."""
    for worker in stack.workers:
        worker.stop(signal.SIGTERM, timeout=10)
        kill_group(worker.process)
    keep_logs(stack, name)


def results(result_url: str, ids: list[str]) -> dict[str, dict]:
    """The final results stored so far, by task id (read straight from the result Redis)."""
    client = redis.Redis.from_url(result_url)
    found: dict[str, dict] = {}
    for i in range(0, len(ids), 500):
        chunk = ids[i:i + 500]
        for task_id, raw in zip(chunk, client.mget([f"celery-task-meta-{t}" for t in chunk])):
            if raw:
                meta = json.loads(raw)
                if meta.get("status") in ("SUCCESS", "FAILURE"):
                    found[task_id] = meta
    return found


def wait_all(result_url: str, ids: list[str], timeout: float) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    while True:
        done = results(result_url, ids)
        if len(done) == len(ids) or time.monotonic() > deadline:
            return done
        time.sleep(0.25)


def submits_by_mobile(sandbox: Sandbox) -> Counter:
    return Counter(c["mobile"] for c in sandbox.calls("Submit"))


def send_batch(stack: Stack, mobiles: list[str], **kwargs: object) -> tuple[list[str], dict[str, float]]:
    """Enqueue one task per mobile; (task ids, enqueue time by mobile)."""
    USED_MOBILES.update(mobiles)
    ids, sent_at = [], {}
    for i, mobile in enumerate(mobiles):
        sent_at[mobile] = time.time()
        ids.append(stack.send(mobile, CODES[i % 2], **kwargs).id)
    return ids, sent_at


def statuses(done: dict[str, dict]) -> Counter:
    return Counter(m["result"]["status"] if m["status"] == "SUCCESS" else "FAILURE" for m in done.values())


# -- 1. worker killed ---------------------------------------------------------------------------


def kill_mid_submits(worker: Worker, box: Sandbox, ids: list[str], submits: int) -> tuple[float, int]:
    """SIGKILL ``worker`` once ``submits`` Submits reached ``box``: (when, how many were in flight)."""
    wait_for(lambda: len(box.calls("Submit")) >= submits, 30, 0.05, f">={submits} Submits in flight")
    worker.stop(signal.SIGKILL)
    kill_group(worker.process)
    killed_at = time.time()
    # A request the killed worker had written reaches the sandbox a moment later: counted now,
    # it would be one more duplicate than Submits in flight (seen under load). Nothing else runs.
    time.sleep(0.5)
    return killed_at, len(box.calls("Submit")) - len(results(RESULTS_DB, ids))


def finish_after_kill(stack: Stack, box: Sandbox, name: str, mobiles: list[str], ids: list[str], killed_at: float,
                      in_flight: int, timeout: float) -> dict[str, Any]:
    """Start a new worker at once and wait for every task; record the numbers under ``name`` and
    check that none was lost, each was sent, and no more were sent twice than were in flight."""
    stack.start_worker(concurrency=120)
    done = wait_all(RESULTS_DB, ids, timeout)
    counts = submits_by_mobile(box)
    dupes = sum(n - 1 for n in counts.values() if n > 1)
    numbers = dict(
        tasks=len(ids), in_flight_at_kill=in_flight, final=len(done), lost=len(ids) - len(done),
        duplicate_submits=dupes, statuses=dict(statuses(done)), recovered_in_s=round(time.time() - killed_at, 1),
        last_code_after_kill_s=round(max(c["at"] for c in box.calls("Submit")) - killed_at, 1))
    record(name, **numbers)
    assert len(done) == len(ids), f"{len(ids) - len(done)} tasks lost"
    assert set(statuses(done)) <= {"submitted", "duplicate"}, statuses(done)
    assert all(counts[m] >= 1 for m in mobiles)
    assert dupes <= in_flight
    return numbers


@pytest.mark.slow
@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_worker_killed_with_100_in_flight(broker):
    """SIGKILL a worker with >=100 Submits in flight; a new worker finishes every task in its TTL."""
    require_servers(broker)
    ttl = 120
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=1500, slow_ms=3000, initial_balance=100000) as slow:
        broker_url = amqp_url() if broker == "rabbitmq" else SCENARIO_DB
        with scenario_stack(f"kill-{broker}", slow, broker=broker_url, state=SCENARIO_DB,
                            result=RESULTS_DB, IHUYI_READ_TIMEOUT="4") as stack:
            first = stack.start_worker(concurrency=120)
            mobiles = [unique_mobile("138") for _ in range(150)]
            ids, sent_at = send_batch(stack, mobiles, ttl=ttl)
            killed_at, in_flight = kill_mid_submits(first, slow, ids, 110)
            assert in_flight >= 100
            finish_after_kill(stack, slow, f"worker_killed_{broker}", mobiles, ids, killed_at, in_flight, ttl)
            assert not [c for c in slow.calls("Submit") if c["at"] > sent_at[c["mobile"]] + ttl]


@pytest.mark.slow
def test_redis_worker_killed_its_messages_back_within_seconds():
    """A dead worker's heartbeat expires and a live worker gives its messages back at once: every
    code sent within 15 s of the kill, with the visibility timeout (the backstop) at 120 s.

    The ihuyi timeouts are the defaults, so a lease lasts 19 s: the redelivered tasks whose
    attempt the dead worker had begun go at once only because their holder's heartbeat is gone.
    """
    require_servers("redis")
    ttl = 120
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=1500, slow_ms=3000, initial_balance=100000) as slow:
        with scenario_stack("kill-redis-heartbeat", slow, broker=SCENARIO_DB,
                            state=SCENARIO_DB, result=RESULTS_DB, REDIS_VISIBILITY_TIMEOUT="120",
                            IHUYI_CONNECT_TIMEOUT="3.05", IHUYI_READ_TIMEOUT="10") as stack:
            first = stack.start_worker(concurrency=60)
            mobiles = [unique_mobile("138") for _ in range(120)]
            ids, _ = send_batch(stack, mobiles, ttl=ttl)
            killed_at, in_flight = kill_mid_submits(first, slow, ids, 60)
            assert in_flight >= 50
            numbers = finish_after_kill(stack, slow, "worker_killed_redis_heartbeat", mobiles, ids, killed_at,
                                        in_flight, 60)
            assert numbers["last_code_after_kill_s"] <= 15
            assert "back to their queues" in stack.workers[1].text()


@pytest.mark.slow
def test_a_worker_stalled_but_not_killed_keeps_its_messages():
    """A live worker keeps what it took, however long its event loop is blocked: a solo-pool
    worker holds 3 messages and runs each for 11 s in its event loop (longer than the 10 s
    heartbeat), and is stopped whole (SIGSTOP) for 6 s on top; a second worker, looking for
    dead workers every second meanwhile, gives none of them back, and the first sends all 3.
    Stopped cleanly, a worker withdraws its heartbeat."""
    require_servers("redis")
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=11000, initial_balance=1000) as slow:
        with scenario_stack("stalled-redis", slow, broker=SCENARIO_DB,
                            state=SCENARIO_DB, result=RESULTS_DB, REDIS_VISIBILITY_TIMEOUT="120",
                            IHUYI_READ_TIMEOUT="15") as stack:
            mobiles = [unique_mobile("138") for _ in range(3)]
            ids, _ = send_batch(stack, mobiles, ttl=120)
            stalled = stack.start_worker("--pool", "solo", "--prefetch-multiplier", "3", concurrency=1)
            wait_for(lambda: stack.state.llen("voicecode") == 0, 10, 0.05, "the solo worker to take all 3")
            watcher = stack.start_worker(concurrency=4)
            wait_for(lambda: len(results(RESULTS_DB, ids)) == 1, 30, 0.1, "the first task done")
            stalled.process.send_signal(signal.SIGSTOP)
            time.sleep(6)  # the stall itself, not a wait for something
            stalled.process.send_signal(signal.SIGCONT)
            done = wait_all(RESULTS_DB, ids, 60)
            counts = submits_by_mobile(slow)
            record("worker_stalled_redis", tasks=len(ids), loop_blocked_s_per_task=11, stopped_s=6,
                   final=len(done), given_back=watcher.text().count("back to their queues"),
                   taken_by_watcher=watcher.text().count("] received"), submits=sum(counts.values()))
            assert len(done) == len(ids) and set(statuses(done)) == {"submitted"}, statuses(done)
            assert all(counts[m] == 1 for m in mobiles)
            assert "back to their queues" not in watcher.text() and "] received" not in watcher.text()
            assert "had lapsed" not in stalled.text()

            stalled.stop()  # a clean shutdown withdraws its heartbeat at once
            beating = [key.decode().split(":")[-2] for key in stack.state.scan_iter("voicecode:heartbeat:*")]
            assert beating == [str(watcher.process.pid)]


# -- 2. broker restart --------------------------------------------------------------------------




def restart_rabbitmq(down_seconds: float = 2) -> float:
    """Stop RabbitMQ's node and start it again ``down_seconds`` later; how long it was down."""
    started = time.monotonic()
    rabbitmqctl("stop_app")
    try:
        time.sleep(down_seconds)
    finally:
        rabbitmqctl("start_app")
    wait_for(lambda: reachable(RABBITMQ_HOST, RABBITMQ_PORT), 30, 0.2, "RabbitMQ back")
    return time.monotonic() - started


@pytest.mark.slow
def test_rabbitmq_restart_mid_run_loses_nothing():
    require_servers("rabbitmq")
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=200, initial_balance=100000) as box:
        with scenario_stack("rabbitmq-restart", box, broker=amqp_url(),
                            state=SCENARIO_DB, result=RESULTS_DB) as stack:
            stack.start_worker(concurrency=10)
            mobiles = [unique_mobile("138") for _ in range(200)]
            ids, _ = send_batch(stack, mobiles, ttl=120)
            wait_for(lambda: len(box.calls("Submit")) >= 40, 30, 0.05, "the run under way")
            outage = restart_rabbitmq()
            later = [unique_mobile("138") for _ in range(20)]
            later_ids, _ = send_batch(stack, later, ttl=120)  # sent after the restart: proves it reconnected
            done = wait_all(RESULTS_DB, ids + later_ids, 90)
            counts = submits_by_mobile(box)
            dupes = sum(n - 1 for n in counts.values() if n > 1)
            record("rabbitmq_restart", tasks=len(ids) + len(later_ids), broker_down_s=round(outage, 1),
                   final=len(done), lost=len(ids) + len(later_ids) - len(done), duplicate_submits=dupes,
                   statuses=dict(statuses(done)))
            assert len(done) == len(ids) + len(later_ids)
            assert set(statuses(done)) <= {"submitted", "duplicate"}
            assert dupes == 0
            assert all(w.process.poll() is None for w in stack.workers)


@pytest.mark.slow
def test_redis_broker_restart_without_persistence(private):
    """A Redis broker that restarts empty loses what it held; the worker reconnects by itself."""
    require_servers("redis")
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=200, initial_balance=100000) as box:
        with scenario_stack("redis-restart", box, broker=private.url(), state=SCENARIO_DB,
                            result=RESULTS_DB) as stack:
            stack.start_worker(concurrency=10)
            mobiles = [unique_mobile("138") for _ in range(200)]
            ids, _ = send_batch(stack, mobiles, ttl=60)
            wait_for(lambda: len(box.calls("Submit")) >= 40, 30, 0.05, "the run under way")
            private.kill()
            time.sleep(2)
            private.start()
            later = [unique_mobile("138") for _ in range(20)]
            later_ids, _ = send_batch(stack, later, ttl=60)
            later_done = wait_all(RESULTS_DB, later_ids, 60)
            done = wait_all(RESULTS_DB, ids, 5)
            counts = submits_by_mobile(box)
            dupes = sum(n - 1 for n in counts.values() if n > 1)
            record("redis_broker_restart_no_persistence", tasks=len(ids), final=len(done),
                   lost=len(ids) - len(done), duplicate_submits=dupes,
                   sent_after_restart=len(later_ids), final_after_restart=len(later_done))
            assert len(later_done) == len(later_ids)  # reconnected by itself
            assert set(statuses(later_done)) == {"submitted"}
            assert dupes == 0
            assert all(w.process.poll() is None for w in stack.workers)


# -- 3. state store down ------------------------------------------------------------------------


@pytest.mark.slow
def test_state_store_down_for_10_seconds(private):
    """The state Redis gone for 10 s: tasks wait and retry; none lost, none sent twice, limits held."""
    require_servers("rabbitmq")
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=100, initial_balance=100000) as box:
        with scenario_stack("state-down", box, broker=amqp_url(),
                            state=private.url(), result=RESULTS_DB) as stack:
            worker = stack.start_worker(concurrency=4)
            # 150 on the default account, 4 at a time at 200 ms a Submit: ~8 s of sending, and
            # 60 on the "slow" account (10/s, burst 2), parked for their slots: the outage falls mid-run.
            mobiles = [unique_mobile("138") for _ in range(150)]
            ids, sent_at = send_batch(stack, mobiles, ttl=120)
            limited = [unique_mobile("139") for _ in range(60)]
            limited_ids, limited_at = send_batch(stack, limited, account="slow", ttl=120)
            ids, sent_at = ids + limited_ids, {**sent_at, **limited_at}
            # A second worker with free threads, on the "spare" account's queue only: the tasks
            # sent to it during the outage meet the state store down at their first step.
            spare = stack.start_worker("-Q", "voicecode.spare", concurrency=4)
            wait_for(lambda: len(box.calls("Submit")) >= 30, 30, 0.05, "the run under way")
            private.shutdown_saving()
            down_at = time.time()
            during_outage = [unique_mobile("137") for _ in range(20)]
            USED_MOBILES.update(during_outage)
            for mobile in during_outage:
                sent_at[mobile] = time.time()
                ids.append(stack.client.send_task("send_voice_code", (mobile, CODES[0]),
                                                  {"account": "spare", "ttl": 120}, queue="voicecode.spare").id)
            time.sleep(10 - (time.time() - down_at))
            private.start()
            up_at = time.time()
            done = wait_all(RESULTS_DB, ids, 90)
            calls = box.calls("Submit")
            counts = Counter(c["mobile"] for c in calls)
            dupes = sum(n - 1 for n in counts.values() if n > 1)
            during = [c for c in calls if down_at + 0.5 < c["at"] < up_at]
            times = sorted(c["at"] for c in calls if c["account"] == ACCOUNTS["slow"]["apiid"])
            worst = max(sum(1 for u in times[i:i + 30] if u < t + 1.0) for i, t in enumerate(times))
            log = worker.text() + spare.text()
            record("state_store_down", tasks=len(ids), down_s=round(up_at - down_at, 1), final=len(done),
                   lost=len(ids) - len(done), duplicate_submits=dupes, submits_while_down=len(during),
                   retried_for_state_store=log.count("state store unreachable"),
                   held_until_recorded=log.count("submitted but not recorded yet"),
                   max_submits_in_1s_on_10_per_s_account=worst, statuses=dict(statuses(done)),
                   alert_raised="ALERT state_store_unavailable" in log)
            assert len(done) == len(ids)
            assert set(statuses(done)) <= {"submitted", "duplicate"}, statuses(done)
            assert dupes == 0
            assert all(c["at"] <= sent_at[c["mobile"]] + 120 for c in calls)
            assert worst <= 13  # 10/s with a burst of 2 (+1 for clock skew at the edges)
            assert "state store unreachable" in log  # the retry path ran
            assert "ALERT state_store_unavailable" in log
            assert worker.process.poll() is None and spare.process.poll() is None


# -- 4. flaky ihuyi -----------------------------------------------------------------------------


def _flaky_mobiles() -> list[tuple[str, int]]:
    """1,000 (mobile, ttl): plain, flaky then fine, always failing, fixed codes, slow past the TTL."""
    def tail() -> str:
        return str(uuid.uuid4().int)[:4]

    mixed: list[tuple[str, int]] = []
    mixed += [(unique_mobile("138"), 60) for _ in range(400)]
    for fault in (0, 1, 2, 4, 5):  # code 0, HTTP 500, reset, garbage, truncated: N failures, then sent
        for n in (1, 2, 3):
            mixed += [(f"19901{fault}{n}{tail()}", 60) for _ in range(30)]
    mixed += [(f"199013{1}{tail()}", 60) for _ in range(30)]  # one slow reply (a timeout), then sent
    for fault in (0, 1, 2, 4, 5):  # always failing: dead-lettered when the retries run out
        mixed += [(f"19902{fault}0{tail()}", 60) for _ in range(10)]
    mixed += [(f"199023{0}{tail()}", 60) for _ in range(4)]  # always slow
    mixed += [(f"199023{0}{tail()}", 1) for _ in range(10)]  # slow, TTL 1 s: expires
    mixed += [("19900004030", 60)] * 20 + [("19900000407", 60)] * 20 + [("19900000000", 60)] * 6
    mixed += [(unique_mobile("138"), 60) for _ in range(1000 - len(mixed))]
    assert len(mixed) == 1000
    return mixed


@pytest.mark.slow
def test_flaky_ihuyi_1000_tasks():
    require_servers("redis")
    with Sandbox(SANDBOX_ACCOUNTS, slow_ms=1500, initial_balance=100000) as box:
        with scenario_stack("flaky", box, broker=SCENARIO_DB, state=SCENARIO_DB,
                            result=RESULTS_DB) as stack:
            worker = stack.start_worker(concurrency=64)
            mixed = _flaky_mobiles()
            USED_MOBILES.update(m for m, _ in mixed)
            started = time.monotonic()
            ids = [stack.send(m, CODES[i % 2], ttl=ttl).id for i, (m, ttl) in enumerate(mixed)]
            done = wait_all(RESULTS_DB, ids, 150)
            elapsed = time.monotonic() - started
            by_status = statuses(done)
            faults = Counter(c["reply"] for c in box.calls("Submit"))
            record("flaky_ihuyi", tasks=len(ids), final=len(done), lost=len(ids) - len(done),
                   statuses=dict(by_status), sandbox_replies={str(k): v for k, v in faults.items()},
                   seconds=round(elapsed, 1), worker_alive=worker.process.poll() is None)
            assert len(done) == len(ids)
            assert set(by_status) <= {"submitted", "dead_lettered", "expired"}, by_status
            assert worker.process.poll() is None
            for (mobile, ttl), task_id in zip(mixed, ids):
                status = done[task_id]["result"]["status"]
                if mobile.startswith("19901"):
                    expected = "submitted" if int(mobile[6]) < 5 else "dead_lettered"
                    assert status == expected, (mobile, done[task_id]["result"])
                elif mobile.startswith("19902") or mobile.startswith("1990000"):
                    assert status in ({"expired"} if ttl == 1 else {"dead_lettered", "expired"}), (mobile, status)
                else:
                    assert status == "submitted", (mobile, done[task_id]["result"])
            assert "Traceback" not in worker.text()


# -- 5. Sentry down or hanging ------------------------------------------------------------------


class HangingReceiver:
    """Accepts connections and reads them, and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.conns.append(conn)
            except OSError:
                continue

    @property
    def dsn(self) -> str:
        return f"http://{PUBLIC_KEY}@127.0.0.1:{self.sock.getsockname()[1]}/42"

    def close(self) -> None:
        self._stop.set()
        for conn in self.conns:
            conn.close()
        self.sock.close()


def _timed_run(box: Sandbox, name: str, n: int, **env: str) -> tuple[float, Counter]:
    """(seconds for n tasks enqueued at once to all finish, their statuses)."""
    with scenario_stack(name, box, broker=SCENARIO_DB, state=SCENARIO_DB,
                        result=RESULTS_DB, **env) as stack:
        stack.start_worker(concurrency=32)
        stack.send(unique_mobile("138"), CODES[0]).get(timeout=30)  # warm up
        mobiles = [unique_mobile("138") for _ in range(n)]
        started = time.time()
        ids, _ = send_batch(stack, mobiles, ttl=60)
        done = wait_all(RESULTS_DB, ids, 60)
        elapsed = time.time() - started
        assert len(done) == n
        return elapsed, statuses(done)


# The default account held to 100 Submits/s: a send rate a production pool is bound by, well
# inside what one worker's CPU does (about 250/s here, with Sentry).
RATE_BOUND = {"IHUYI_ACCOUNTS": json.dumps({**ACCOUNTS, "default": {**ACCOUNTS["default"], "rate_limit": "100/s",
                                                                     "burst": 10}})}

#: How much longer the runs with a hanging Sentry may take (best of up to three each): rate-bound
#: against no Sentry, CPU-bound against a healthy Sentry (busy-machine noise reached 1.26 there).
RATE_BOUND_MAX, CPU_BOUND_MAX = 1.10, 1.5


@pytest.mark.slow
def test_hanging_sentry_does_not_slow_sends():
    """A Sentry that accepts and never answers does not slow sends; none past its TTL.

    Rate-bound (the account's limit sets the pace, as in production), a hanging Sentry is
    within 10 % of no Sentry. CPU-bound (no limit), the SDK's own work per task (logs,
    scrubbing, sampled transactions) is a price paid whether Sentry answers or not, and the
    machine's noise is as large as the differences: there a hanging Sentry is only held within
    half again of a healthy one, which a task thread waiting on Sentry would be far beyond.
    The cost against no Sentry is recorded, not asserted.
    """
    require_servers("redis")
    n = 300
    hanging = HangingReceiver()
    runs: list[dict[str, float]] = []
    try:
        with SentryReceiver() as healthy, Sandbox(SANDBOX_ACCOUNTS, initial_balance=100000) as box:
            scenarios = (("without_sentry_s", {}), ("sentry_healthy_s", {"SENTRY_DSN": healthy.dsn}),
                         ("sentry_hanging_s", {"SENTRY_DSN": hanging.dsn}),
                         ("rate_bound_without_sentry_s", RATE_BOUND),
                         ("rate_bound_sentry_hanging_s", {**RATE_BOUND, "SENTRY_DSN": hanging.dsn}))
            for _ in range(3):
                run = {}
                for name, env in scenarios:
                    elapsed, status = _timed_run(box, name, n, **env)
                    assert status == Counter({"submitted": n})  # none past its TTL
                    run[name] = round(elapsed, 2)
                runs.append(run)
                best = {key: min(r[key] for r in runs) for key in runs[0]}
                hanging_vs_healthy = best["sentry_hanging_s"] / best["sentry_healthy_s"]
                rate_bound_hanging_vs_without = best["rate_bound_sentry_hanging_s"] / best["rate_bound_without_sentry_s"]
                if hanging_vs_healthy <= CPU_BOUND_MAX and rate_bound_hanging_vs_without <= RATE_BOUND_MAX:
                    break
        record("sentry_hanging", tasks_per_run=n, runs=runs,
               rate_bound_hanging_vs_without=round(rate_bound_hanging_vs_without, 3),
               hanging_vs_healthy=round(hanging_vs_healthy, 3),
               healthy_vs_without=round(best["sentry_healthy_s"] / best["without_sentry_s"], 3),
               connections_held=len(hanging.conns))
        assert hanging.conns, "the SDK never tried the hanging receiver"
        assert healthy.bodies, "the healthy receiver got nothing"
        assert rate_bound_hanging_vs_without <= RATE_BOUND_MAX, runs
        assert hanging_vs_healthy <= CPU_BOUND_MAX, runs
    finally:
        hanging.close()


# -- 6. bad input from a foreign producer --------------------------------------------------------


def _publish_raw(url: str, body: bytes, *, headers: dict | None, content_type: str = "application/json",
                 content_encoding: str = "utf-8") -> None:
    with kombu.Connection(url) as conn:
        producer = conn.Producer()
        producer.publish(body, exchange=kombu.Exchange("voicecode", "direct"), routing_key="voicecode",
                         headers=headers or {}, content_type=content_type, content_encoding=content_encoding,
                         declare=[kombu.Queue("voicecode")], serializer=None)


def _task_headers(task_id: str, name: str = "send_voice_code") -> dict:
    return {"lang": "py", "task": name, "id": task_id, "root_id": task_id, "parent_id": None, "group": None,
            "retries": 0, "eta": None, "expires": None, "argsrepr": "()", "kwargsrepr": "{}"}


def _body(args: object, kwargs: object) -> bytes:
    return json.dumps([args, kwargs, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()


BIG = "7" * 1_000_000


@pytest.fixture(scope="module")
def input_stack():
    """A worker for the bad-input tests, on a database of its own: it lives until the module ends,
    and would otherwise take the tasks of the scenarios after it."""
    require_servers("redis")
    with Sandbox(SANDBOX_ACCOUNTS, initial_balance=100000) as box:
        with scenario_stack("bad-input", box, broker=redis_url(10), state=redis_url(10),
                            result=RESULTS_DB) as stack:
            stack.start_worker(concurrency=8)
            yield stack


def test_bad_messages_from_a_foreign_producer_are_dead_lettered(input_stack):
    stack = input_stack
    mobile = unique_mobile("138")
    USED_MOBILES.add(mobile)
    url = stack.backend.broker
    cases = {  # name -> (body, headers, content type)
        "wrong types": (_body([int(mobile), 730518], {}), None, "application/json"),
        "missing fields": (_body([], {}), None, "application/json"),
        "too many fields": (_body([mobile, CODES[0], "default", "r", 60, "extra"], {}), None, "application/json"),
        "1 MB mobile": (_body([BIG, CODES[0]], {}), None, "application/json"),
        "1 MB code": (_body([mobile, BIG], {}), None, "application/json"),
        "unknown account": (_body([mobile, CODES[0]], {"account": "nobody"}), None, "application/json"),
        "negative ttl": (_body([mobile, CODES[0]], {"ttl": -5}), None, "application/json"),
        "unknown keyword": (_body([mobile, CODES[0]], {"pin": CODES[1]}), None, "application/json"),
        "body not a list": (json.dumps({"mobile": mobile, "code": CODES[0]}).encode(), None, "application/json"),
        "non-UTF-8 body": (b'[["' + mobile.encode() + b'\xff\xfe", "' + CODES[0].encode() + b'"], {}, {}]', None,
                           "application/json"),
        "not JSON": (b"\x80\x04\x95" + mobile.encode(), None, "application/x-python-serialize"),
        "unknown task": (_body([mobile, CODES[0]], {}), "send_sms", "application/json"),
        "not a celery message": (_body([mobile, CODES[0]], {}), "", "application/json"),
    }
    ids = {}
    before = {letter.id for letter in stack.dead_letters.list()}
    for name, (body, task, ctype) in cases.items():
        task_id = str(uuid.uuid4())
        headers = {} if task == "" else _task_headers(task_id, task or "send_voice_code")
        _publish_raw(url, body, headers=headers, content_type=ctype)
        ids[name] = task_id
    # The worker keeps going: a normal task afterwards is sent.
    assert stack.send(mobile, CODES[1], ttl=60).get(timeout=30)["status"] == "submitted"

    def letters() -> list:
        return [letter for letter in stack.dead_letters.list() if letter.id not in before]
    wait_for(lambda: len(letters()) >= len(cases), 30, 0.2, "every bad message dead-lettered")
    time.sleep(0.5)
    new = letters()
    assert len(new) == len(cases)  # each once: no message copied into several queues
    assert {letter.reason for letter in new} == {"invalid_payload"}
    assert all(letter.detail for letter in new)
    by_task = {letter.task_id: letter for letter in new}
    for name, task_id in ids.items():
        if name != "not a celery message":
            assert task_id in by_task, f"{name}: no dead letter"
    details = {name: by_task[task_id].detail for name, task_id in ids.items() if task_id in by_task}
    record("bad_input", messages=len(cases), dead_lettered=len(new), details=details)
    log = stack.workers[0].text()
    for secret in (mobile, BIG[:64], CODES[0], CODES[1]):
        assert secret not in log
    assert stack.workers[0].process.poll() is None
    keep_logs(stack, "bad-input")


_SHAPE = __import__("inspect").signature(lambda mobile, code, account=None, request_id=None, ttl=None: None)

_values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**12, 10**12), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20), st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True), st.sampled_from(["4821", "123456"]),
    st.sampled_from(["default", "spare", "nobody", ""]), st.lists(st.integers(), max_size=2),
)
_messages = st.tuples(
    st.lists(_values, max_size=6),
    st.dictionaries(st.sampled_from(["mobile", "code", "account", "request_id", "ttl", "extra"]), _values, max_size=3),
)


def _expected_invalid(args: list, kwargs: dict) -> bool:
    from worker.sending.request import validate

    try:
        bound = _SHAPE.bind(*args, **kwargs).arguments
        validate(bound["mobile"], bound["code"], bound.get("account"), bound.get("request_id"), bound.get("ttl"),
                 accounts=ACCOUNTS.keys(), default_ttl=300)
    except (TypeError, ValueError):
        return True
    return False


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(_messages, min_size=15, max_size=15))
def test_any_message_on_the_queue_ends_in_a_final_state(input_stack, batch):
    """Property: whatever a foreign producer puts in a task message, it ends final; invalid ones as invalid_payload."""
    stack = input_stack
    ids = []
    for args, kwargs in batch:
        task_id = str(uuid.uuid4())
        # Generated numbers may land in request_id or account, which are not secret: not scanned for.
        _publish_raw(stack.backend.broker, _body(args, kwargs), headers=_task_headers(task_id))
        ids.append(task_id)
    done = wait_all(RESULTS_DB, ids, 60)
    assert len(done) == len(ids)
    for (args, kwargs), task_id in zip(batch, ids):
        meta = done[task_id]
        assert meta["status"] == "SUCCESS", meta
        result = meta["result"]
        if _expected_invalid(args, kwargs):
            assert (result["status"], result["reason"]) == ("dead_lettered", "invalid_payload"), (args, kwargs, result)
            assert result["detail"]
        else:
            assert result["status"] in {"submitted", "dead_lettered", "expired", "duplicate"}
            assert result.get("reason") != "invalid_payload", (args, kwargs, result)
    assert stack.workers[0].process.poll() is None
    keep_logs(stack, "bad-input")


# -- 7. a hostile ihuyi: replies that drip, hang or make no sense ----------------------------------


def _tail() -> str:
    return str(uuid.uuid4().int)[:4]


#: base_env's timeouts: one Submit attempt lasts at most connect + read = 2 s, whatever ihuyi does.
ATTEMPT_SECONDS = 2.0


@pytest.fixture(scope="module")
def hostile():
    """A sandbox that drips its replies 1 byte every 0.5 s (under the 1 s read timeout), one 8-thread worker.

    On a database of its own: it lives until the module ends, beside the scenarios on 14.
    """
    require_servers("redis")
    with Sandbox(SANDBOX_ACCOUNTS, slow_ms=60000, drip_ms=500, initial_balance=100000) as box:
        with scenario_stack("hostile", box, broker=redis_url(7), state=redis_url(7),
                            result=RESULTS_DB, IHUYI_PASSWORD_MODE="apikey") as stack:
            stack.start_worker(concurrency=8)
            yield box, stack


def _submit_times(box: Sandbox, mobile: str) -> list[float]:
    return sorted(c["at"] for c in box.calls("Submit") if c["mobile"] == mobile)


@pytest.mark.parametrize("fault", [6, 7], ids=["drip", "hang after headers"])
def test_a_reply_that_never_finishes_is_abandoned_at_the_attempts_deadline(hostile, fault):
    box, stack = hostile
    mobile = f"19901{fault}1{_tail()}"  # the first reply drips (or hangs), the second is normal
    USED_MOBILES.add(mobile)
    result = stack.send(mobile, CODES[0], ttl=60).get(timeout=30)
    assert (result["status"], result["attempts"]) == ("submitted", 2)
    first, second = _submit_times(box, mobile)
    record(f"hostile_ihuyi_fault_{fault}", retry_after_first_submit_s=round(second - first, 2))
    assert second - first <= ATTEMPT_SECONDS + 0.4 + 1.0  # the attempt's deadline, the longest backoff, slack


def test_no_submit_after_the_codes_deadline(hostile):
    box, stack = hostile
    mobiles = [f"1990260{_tail()}" for _ in range(4)]
    USED_MOBILES.update(mobiles)
    tasks = [stack.send(m, CODES[2], ttl=5) for m in mobiles]
    last_enqueued = time.time()  # every deadline is at most this + 5 s
    results = [t.get(timeout=30) for t in tasks]
    assert {r["status"] for r in results} <= {"expired", "dead_lettered"}
    times = [at for m in mobiles for at in _submit_times(box, m)]
    record("dripping_ihuyi_deadline", tasks=len(mobiles), submits=len(times),
           last_submit_before_deadline_s=round(last_enqueued + 5 - max(times), 2))
    assert len(times) >= 2 * len(mobiles) and max(times) < last_enqueued + 5


def test_a_reply_code_of_5000_digits_is_retried_not_failed(hostile):
    box, stack = hostile
    mobile = f"1990181{_tail()}"
    USED_MOBILES.add(mobile)
    result = stack.send(mobile, CODES[0], ttl=60).get(timeout=30)
    assert (result["status"], result["attempts"]) == ("submitted", 2)


def test_a_reply_that_echoes_the_request_leaves_no_apikey_in_the_dead_letter(hostile):
    box, stack = hostile
    mobile = f"1990290{_tail()}"
    USED_MOBILES.add(mobile)
    result = stack.send(mobile, CODES[0], ttl=60).get(timeout=30)
    assert result["status"] == "dead_lettered"
    listing = stack.cli("dead-letters", "list", "--json").stdout
    assert result["dead_letter"] in listing
    assert not [s for s in SECRETS if s in listing] and mobile not in listing


def test_dripping_replies_leave_threads_for_new_codes(hostile):
    box, stack = hostile
    dripping = [f"1990260{_tail()}" for _ in range(16)]  # always drip: twice the worker's threads
    USED_MOBILES.update(dripping)
    for mobile in dripping:
        stack.send(mobile, CODES[1], ttl=10)  # gone soon after: the module's later tests
    wait_for(lambda: sum(c["mobile"] in dripping for c in box.calls("Submit")) >= 8, 10, what="threads busy")
    mobile = unique_mobile("138")
    USED_MOBILES.add(mobile)
    enqueued = time.monotonic()
    assert stack.send(mobile, CODES[0], ttl=60).get(timeout=10)["status"] == "submitted"
    record("dripping_ihuyi_new_code", dripping_tasks=len(dripping), threads=8,
           new_code_sent_after_s=round(time.monotonic() - enqueued, 2))


@pytest.mark.slow
def test_a_redelivery_while_the_first_attempt_still_reads_does_not_call_twice():
    """Redis redelivers at 10 s an attempt that may last 15 s: the lease makes the copy wait."""
    require_servers("redis")
    with Sandbox(SANDBOX_ACCOUNTS, drip_ms=2000, initial_balance=1000) as box:
        with scenario_stack("redelivery", box, broker=SCENARIO_DB,
                            state=SCENARIO_DB, result=RESULTS_DB,
                            IHUYI_READ_TIMEOUT="14", REDIS_VISIBILITY_TIMEOUT="10") as stack:
            stack.start_worker(concurrency=4)
            stack.start_worker(concurrency=4)
            mobile = f"1990161{_tail()}"
            USED_MOBILES.add(mobile)
            result = stack.send(mobile, CODES[0], ttl=120).get(timeout=40)
            assert result["status"] in {"submitted", "duplicate"}
            first, second = _submit_times(box, mobile)
            record("redelivery_during_attempt", submits=2, second_submit_after_s=round(second - first, 2))
            # The second Submit only once the first attempt was cut at its 15 s deadline.
            assert 15 <= second - first <= 15 + 0.4 + 2


# -- 8. secrets ---------------------------------------------------------------------------------


def _leaks(text: str, where: str, codes: tuple[str, ...] = CODES) -> list[str]:
    found = [f"{where}: APIKEY" for s in SECRETS if s in text]
    # Runs of digits standing alone: inside a hex id (a task id's "...eb59174") they are not a code.
    digit_runs = (set(re.findall(r"(?<![0-9A-Za-z.])[0-9]+(?![0-9A-Za-z.])", text))
                  | set(re.findall(r"(?<![0-9])[0-9]{11}(?![0-9])", text)))
    found += [f"{where}: mobile {m[:3]}…" for m in sorted(USED_MOBILES & digit_runs)]
    found += [f"{where}: code {c}" for c in codes if c in digit_runs]
    return found


def test_secrets_never_leak(short_tmp):
    """A mixed batch with Sentry and Flower up, then every log, result, dead letter, Flower reply and
    Sentry envelope (this test's and every earlier scenario's logs) scanned for secrets."""
    require_servers("redis")
    auth = ("ops", "s3cret-flower")
    with SentryReceiver() as receiver, Sandbox(SANDBOX_ACCOUNTS, initial_balance=100000) as box:
        with scenario_stack("secrets", box, broker=SCENARIO_DB, state=SCENARIO_DB,
                            result=RESULTS_DB, SENTRY_DSN=receiver.dsn, SENTRY_ENVIRONMENT="test",
                            SENTRY_TRACES_SAMPLE_RATE="1.0",  # every transaction scanned too
                            FLOWER_BASIC_AUTH=":".join(auth)) as stack:
            stack.start_worker(concurrency=8)
            port = free_port()
            flower = start(stack, "flower", "-m", "cli", "flower", "--port", str(port))
            base = f"http://127.0.0.1:{port}"
            try:
                def flower_up() -> bool:
                    try:
                        return requests.get(f"{base}/api/workers", auth=auth, timeout=2).ok
                    except requests.ConnectionError:
                        return False
                wait_for(flower_up, 30, 0.2, "Flower")
                time.sleep(1)
                batch = [(unique_mobile("138"), {}), (unique_mobile("139"), {"foreign": True}),
                         (f"1990101{str(uuid.uuid4().int)[:4]}", {}), ("19900004030", {}), ("19900009999", {}),
                         (f"19902{2}0{str(uuid.uuid4().int)[:4]}", {}), (unique_mobile("138"), {"ttl": 60})]
                tasks = []
                for i, (mobile, extra) in enumerate(batch):
                    USED_MOBILES.add(mobile)
                    tasks.append(stack.send(mobile, CODES[i % 3], **extra))
                bad = unique_mobile("137")
                USED_MOBILES.add(bad)
                tasks.append(stack.send(bad, "12", foreign=True))  # invalid code: dead-lettered invalid_payload
                outcomes = [t.get(timeout=60) for t in tasks]
                time.sleep(2)  # events reach Flower, envelopes reach the receiver
                replies = {"tasks": requests.get(f"{base}/api/tasks", auth=auth, timeout=5).text,
                           "workers": requests.get(f"{base}/api/workers", auth=auth, timeout=10).text}
                for t in tasks:
                    replies[f"task {t.id}"] = requests.get(f"{base}/api/task/info/{t.id}", auth=auth, timeout=5).text
                assert requests.get(f"{base}/api/tasks", timeout=5).status_code == 401
            finally:
                stop(flower)
            letters = stack.cli("dead-letters", "list", "--json")
            assert letters.returncode == 0, letters.stderr
            stack.stop_workers()
            time.sleep(0.5)
            keep_logs(stack, "secrets")
            stored = redis.Redis.from_url(RESULTS_DB)
            raw_results = [stored.get(f"celery-task-meta-{t.id}") or b"" for t in tasks]

    assert {o["status"] for o in outcomes} >= {"submitted", "dead_lettered"}
    assert receiver.bodies, "no Sentry envelope received"
    leaks: list[str] = []
    for name, text in KEPT_LOGS.items():
        leaks += _leaks(text, f"log {name}")
    leaks += _leaks(json.dumps(outcomes), "results") + _leaks(b"".join(raw_results).decode(errors="replace"), "stored results")
    leaks += _leaks(letters.stdout + letters.stderr, "dead-letters list")
    for name, text in replies.items():
        leaks += _leaks(text, f"Flower {name}")
    for i, body in enumerate(receiver.bodies):
        leaks += _leaks(body.decode(errors="replace"), f"Sentry envelope {i}")
    record("secrets", logs_scanned=len(KEPT_LOGS), log_bytes=sum(len(t) for t in KEPT_LOGS.values()),
           mobiles_checked=len(USED_MOBILES), sentry_envelopes=len(receiver.bodies),
           flower_replies=len(replies), leaks=len(leaks))
    assert not leaks, leaks[:20]
