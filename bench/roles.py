"""What each Redis role costs per send: the broker's, the state's and the results' Redis apart.

Each role gets a ``redis-server`` of its own (on RabbitMQ, the broker is the ``vcbench`` vhost
and only state and results are Redis), and around ``min(VCBENCH_TASKS, 2000)`` sends with one
worker (the Procfile's line) the scenario reads each server's ``INFO cpu`` (user + sys) and
``INFO commandstats`` (every command, those run inside Lua scripts too): Redis CPU and commands
per send, per role. Beside it, the bare-Celery reference (bench/reference.py's no-op task with
the service's pool settings) on the same servers: what Celery itself costs the broker and the
results Redis per task. Sends are published by task name, as bench/perf.py's cost scenario
does, so the producer API's own reservation is not in the figures.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import redis
from celery import Celery

from bench.harness import Report, wait_until
from bench.perf import (ACCOUNTS, APIID, APIKEY, BIN, RESULTS_DB, VHOST, Run, enqueue_ours, enqueue_ref,
                        _redis_cpu, ensure_vhost, fresh_mobiles, n_tasks, private_redis, procfile_worker, worker_pool)
from ihuyi.sandbox import Sandbox
from tests.support import base_env

ROLES = ("broker", "state", "results")


@dataclass
class Roles:
    """Where each role lives: a port per Redis role (the broker's None on RabbitMQ)."""

    ports: dict[str, int]
    broker_url: str

    def url(self, role: str, db: int = 1) -> str:
        return f"redis://127.0.0.1:{self.ports[role]}/{db}"

    def client(self, role: str) -> redis.Redis:
        return redis.Redis(port=self.ports[role])

    @cached_property
    def _results(self) -> redis.Redis:
        """The client results_count polls with: one connection for the run, not one per poll."""
        return redis.Redis(port=self.ports["results"], db=RESULTS_DB)

    def results_count(self) -> int:
        return self._results.dbsize()

    def snapshot(self) -> dict[str, tuple[float, int]]:
        """Each Redis role's (CPU seconds, commands run) so far."""
        taken = {}
        for role in self.ports:
            client = self.client(role)
            taken[role] = (_redis_cpu(client), sum(v["calls"] for v in client.info("commandstats").values()))
        return taken


@contextmanager
def role_servers(broker: str) -> Iterator[Roles]:
    with ExitStack() as stack:
        roles = ROLES if broker == "redis" else ROLES[1:]
        ports = {role: stack.enter_context(private_redis()) for role in roles}
        if broker == "redis":
            broker_url = f"redis://127.0.0.1:{ports['broker']}/1"
        else:
            ensure_vhost()
            broker_url = f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
        yield Roles(ports, broker_url)


def _measure(report: Report, name: str, label: str, servers: Roles, count: int, enqueue, done_at: int) -> None:
    before = servers.snapshot()
    enqueue()
    wait_until(lambda: servers.results_count() >= done_at, count / 20 + 60, 0.05)
    after = servers.snapshot()
    done = servers.results_count() - (done_at - count)
    per = max(done, 1)
    total_cpu = total_commands = 0.0
    for role in servers.ports:
        cpu = (after[role][0] - before[role][0]) * 1e6 / per
        commands = (after[role][1] - before[role][1]) / per
        total_cpu += cpu
        total_commands += commands
        report.add(name, f"{label} {role} Redis CPU µs/send", cpu)
        report.add(name, f"{label} {role} Redis commands/send", commands)
    report.add(name, f"{label} all Redis roles CPU µs/send", total_cpu)
    report.add(name, f"{label} all Redis roles commands/send", total_commands)
    report.add(name, f"{label} completed", f"{done} of {count}", str(count), done == count)


def roles(report: Report, broker: str) -> None:
    """Redis CPU and commands per send for each role, the service and the bare-Celery reference."""
    count = min(n_tasks(), 2000)
    name = f"roles/{broker}"
    with role_servers(broker) as servers, Sandbox({APIID: APIKEY}, latency_ms=100, initial_balance=10**8) as sandbox, \
            _tmp() as tmp:
        results = servers.url("results", RESULTS_DB)
        env = base_env(sandbox.url, CELERY_BROKER_URL=servers.broker_url, REDIS_URL=servers.url("state"),
                       CELERY_RESULT_BACKEND=results, IHUYI_ACCOUNTS=json.dumps(ACCOUNTS), MOBILE_THROTTLE="",
                       REDIS_VISIBILITY_TIMEOUT="120", IHUYI_CONNECT_TIMEOUT="3.05", IHUYI_READ_TIMEOUT="10",
                       REF_BROKER_URL=servers.broker_url, REF_RESULT_BACKEND=results, WORKER_PROCESSES="1",
                       PATH=f"{BIN}:{os.environ.get('PATH', '')}")
        run = Run(env, tmp)
        try:
            app = Celery("vcbench-roles", broker=servers.broker_url)
            app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
            run.start(procfile_worker())
            warm = fresh_mobiles(20)
            enqueue_ours(app, warm)
            wait_until(lambda: servers.results_count() >= len(warm), 30, 0.05)
            _measure(report, name, "ours", servers, count, lambda: enqueue_ours(app, fresh_mobiles(count)),
                     len(warm) + count)
            run.stop()
            for role in servers.ports:
                servers.client(role).flushall()
            pool, concurrency = worker_pool(env)
            run.start(f"celery -A bench.reference worker --loglevel INFO --pool {pool} --concurrency {concurrency}")
            enqueue_ref(app, "ref.noop", 20)
            wait_until(lambda: servers.results_count() >= 20, 30, 0.05)
            _measure(report, name, f"bare Celery no-op ({pool}/{concurrency})", servers, count,
                     lambda: enqueue_ref(app, "ref.noop", count), 20 + count)
        finally:
            run.stop()


@contextmanager
def _tmp() -> Iterator[Path]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="vcroles-", dir="/tmp") as tmp:
        yield Path(tmp)
