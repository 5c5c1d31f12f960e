"""Performance benchmarks: throughput (vs naive and ceiling references), latency, cost per task, scale.

Every scenario runs on a private ``redis-server`` started here (and, for RabbitMQ, a vhost of
its own, ``vcbench``), so the benchmark neither disturbs nor is disturbed by tests sharing
the machine's Redis/RabbitMQ. Workers are started with the Procfile's own ``worker:`` line,
so what is measured is what ``make run``/production start.

``VCBENCH_TASKS`` (or ``python -m bench --tasks N``) sets the task count (default 5000).
"""
from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import kombu
import redis
from celery import Celery

from bench import sentry_cpu
from bench.harness import Report, percentile, rss_mb, wait_until
from config.settings import load_settings
from ihuyi.sandbox import Sandbox
from tests import servers
from tests.sentry_receiver import SentryReceiver
from tests.support import ROOT, base_env
from worker.broker.messages import queue_for

APIID, APIKEY = "perf-apiid", "perf-S3CR3T-key"
ACCOUNTS = {"default": {"apiid": APIID, "apikey": APIKEY, "rate_limit": "100000/s"}}
LATENCY_MS = 100
VHOST = "vcbench"
RESULTS_DB = 3
#: The service's count of final outcomes (worker/stores/metrics.py).
OUTCOMES_KEY = "voicecode:metrics:outcomes"
QUEUES = ["voicecode", queue_for("default"), "vcbench.ref"]
BIN = Path(sys.executable).parent


def n_tasks() -> int:
    return int(os.environ.get("VCBENCH_TASKS", "5000"))


# -- infrastructure ------------------------------------------------------------------------

@contextmanager
def private_redis() -> Iterator[int]:
    """A ``redis-server`` of the run's own on a free loopback port (tests/servers.py's), its port."""
    with tempfile.TemporaryDirectory(prefix="vcbench-redis-", dir="/tmp") as tmp:
        server = servers.RedisServer(Path(tmp))
        server.start()
        try:
            yield server.port
        finally:
            server.stop()


@dataclass
class Env:
    """Broker and Redis URLs for one broker kind, on the private Redis (and vhost)."""

    broker_kind: str
    port: int

    @property
    def broker(self) -> str:
        if self.broker_kind == "rabbitmq":
            return f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
        return f"redis://127.0.0.1:{self.port}/1"

    @property
    def state(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{1 if self.broker_kind == 'redis' else 2}"

    @property
    def results(self) -> str:
        return f"redis://127.0.0.1:{self.port}/{RESULTS_DB}"

    def server(self) -> redis.Redis:
        return redis.Redis(port=self.port)

    @cached_property
    def _counted(self) -> tuple[redis.Redis, redis.Redis]:
        """The clients results_count polls with: one connection each for the whole run, not one per poll."""
        return redis.Redis.from_url(self.state), redis.Redis(port=self.port, db=RESULTS_DB)

    def results_count(self) -> int:
        """Tasks finished: the reference's results (a database of their own) and the service's final
        outcomes (its results are in the state Redis, as by default, stored with these counters)."""
        state, results = self._counted
        return results.dbsize() + sum(int(n) for n in state.hvals(OUTCOMES_KEY))

    def reset(self) -> None:
        self.server().flushall()
        if self.broker_kind == "rabbitmq":
            with kombu.Connection(self.broker) as conn:
                for queue in QUEUES:
                    channel = conn.channel()
                    try:
                        channel.queue_purge(queue)
                    except conn.channel_errors:
                        pass
                    finally:
                        try:
                            channel.close()
                        except Exception:  # noqa: BLE001 - a channel closed by the broker
                            pass


def ensure_vhost() -> None:
    for args in (["add_vhost", VHOST], ["set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"]):
        subprocess.run(["rabbitmqctl", *args], capture_output=True, timeout=60)


def procfile_worker() -> str:
    line = next(l for l in (ROOT / "Procfile").read_text().splitlines() if l.startswith("worker:"))
    return line.split(":", 1)[1].strip()


def worker_pool(env: dict[str, str]) -> tuple[str, int]:
    """The pool and concurrency a worker started with ``env`` runs (WORKER_POOL, WORKER_CONCURRENCY)."""
    settings = load_settings(env)
    return settings.worker_pool, settings.worker_concurrency


@dataclass
class Proc:
    process: subprocess.Popen
    log: Path
    cpu_at_ready: float = 0.0

    def pids(self) -> list[int]:
        pids = [self.process.pid]
        try:
            children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
            pids += [int(p) for p in children]
        except OSError:
            pass
        return pids

    def cpu_seconds(self) -> float:
        total = 0.0
        tick = os.sysconf("SC_CLK_TCK")
        for pid in self.pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def rss(self) -> float:
        return sum(rss_mb(pid) for pid in self.pids())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()


@dataclass
class Run:
    """Workers of one scenario step; stopped on exit."""

    env: dict[str, str]
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    def start(self, command: str, extra_env: dict[str, str] | None = None, wait: bool = True) -> Proc:
        name = f"w{len(self.procs)}-{uuid.uuid4().hex[:6]}"
        log = self.tmp / f"{name}.log"
        process = subprocess.Popen(["sh", "-c", f"exec {command} --hostname {name}@%h"], cwd=ROOT,
                                   env={**self.env, **(extra_env or {})}, stdout=log.open("w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(process, log)
        self.procs.append(proc)
        if wait:
            self.wait_ready(proc)
        return proc

    def wait_ready(self, proc: Proc) -> None:
        ok = wait_until(lambda: "ready." in proc.log.read_text(errors="replace") or proc.process.poll() is not None, 90, 0.05)
        if not ok or proc.process.poll() is not None:
            raise RuntimeError(f"worker did not start:\n{proc.log.read_text(errors='replace')[-3000:]}")
        proc.cpu_at_ready = proc.cpu_seconds()

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs.clear()


@contextmanager
def perf_stack(broker_kind: str, latency_ms: int = LATENCY_MS) -> Iterator[tuple[Env, Sandbox, Run]]:
    if broker_kind == "rabbitmq":
        ensure_vhost()
    with private_redis() as port, Sandbox({APIID: APIKEY}, latency_ms=latency_ms, initial_balance=10**8) as sandbox, \
            tempfile.TemporaryDirectory(prefix="vcperf-", dir="/tmp") as tmp:
        env_ = Env(broker_kind, port)
        env_.reset()
        env = base_env(sandbox.url, CELERY_BROKER_URL=env_.broker, REDIS_URL=env_.state,
                       IHUYI_ACCOUNTS=json.dumps(ACCOUNTS), MOBILE_THROTTLE="",
                       REDIS_VISIBILITY_TIMEOUT="120", IHUYI_CONNECT_TIMEOUT="3.05", IHUYI_READ_TIMEOUT="10",
                       REF_BROKER_URL=env_.broker, REF_RESULT_BACKEND=env_.results,
                       # One process per worker started (the Procfile's line then is `celery worker`):
                       # the figures per process; bench/host.py runs the line as shipped, a process per core.
                       WORKER_PROCESSES="1", PATH=f"{BIN}:{os.environ.get('PATH', '')}")
        run = Run(env, Path(tmp))
        try:
            yield env_, sandbox, run
        finally:
            run.stop()
            env_.reset()


def producer(env_: Env) -> Celery:
    app = Celery("vcbench-producer", broker=env_.broker)
    app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)
    return app


def fresh_mobiles(n: int) -> list[str]:
    base = uuid.uuid4().int % 10**7
    return [f"13{(base + i) % 10**9:09d}" for i in range(n)]


def enqueue_ours(app: Celery, mobiles: list[str]) -> dict[str, float]:
    sent = {}
    queue = queue_for("default")
    for m in mobiles:
        sent[m] = time.time()
        app.send_task("send_voice_code", (m, "1234"), {"account": "default"}, queue=queue,
                      headers={"enqueued_at": sent[m]})
    return sent


def enqueue_ref(app: Celery, name: str, n: int, url: str = "") -> None:
    mobiles = fresh_mobiles(n)
    for m in mobiles:
        args = (url, APIID, APIKEY, m, "1234") if name == "ref.naive" else ()
        app.send_task(name, args, queue="vcbench.ref")


def drain(env_: Env, n: int, timeout: float) -> tuple[float, int]:
    """Poll the results DB until ``n`` results; the completion rate from the first to the last."""
    first_t = first_n = None
    deadline = time.monotonic() + timeout
    count = 0
    while time.monotonic() < deadline:
        count = env_.results_count()
        now = time.monotonic()
        if first_t is None and count > 0:
            first_t, first_n = now, count
        if count >= n:
            break
        time.sleep(0.02)
    if first_t is None or now <= first_t:
        return 0.0, count
    return (count - first_n) / (now - first_t), count


def warm_up(env_: Env, app: Celery, run: Run) -> int:
    """Send through the running worker until every thread of its pool has sent, and so opened
    its Redis connections (up to four round trips each), as on a worker that has been running;
    returns how many results that left."""
    warm = 4 * worker_pool(run.env)[1]
    enqueue_ours(app, fresh_mobiles(warm))
    wait_until(lambda: env_.results_count() >= warm, 60, 0.05)
    return warm


# -- scenarios -------------------------------------------------------------------------------

def _ours_run(env_: Env, sandbox: Sandbox, run: Run, tasks: int, workers: int = 1,
              extra_env: dict[str, str] | None = None) -> tuple[float, int, list[Proc]]:
    env_.reset()
    sandbox.reset()
    enqueue_ours(producer(env_), fresh_mobiles(tasks))
    procs = [run.start(procfile_worker(), extra_env, wait=False) for _ in range(workers)]
    for proc in procs:
        run.wait_ready(proc)
    rate, done = drain(env_, tasks, timeout=tasks / 20 + 60)
    return rate, done, procs


def throughput(report: Report, broker: str) -> None:
    """Ours vs naive (seed-style requests.post, prefork) vs ceiling (no-op task, our pool settings)."""
    tasks = n_tasks()
    name = f"throughput/{broker}"
    with perf_stack(broker) as (env_, sandbox, run):
        pool, conc = worker_pool(run.env)
        rate, done, procs = _ours_run(env_, sandbox, run, tasks)
        ours_cpu = (procs[0].cpu_seconds() - procs[0].cpu_at_ready) * 1000 / max(done, 1)
        submits = len(sandbox.calls("Submit"))
        run.stop()
        report.add(name, f"ours ({pool}/{conc}) tasks/s", rate)
        report.add(name, "ours completed / Submits", f"{done} / {submits} of {tasks}", str(tasks), done == tasks == submits)
        report.add(name, "ours worker CPU ms/task", ours_cpu)

        env_.reset()
        app = producer(env_)
        enqueue_ref(app, "ref.noop", tasks)
        ceiling_proc = run.start(f"celery -A bench.reference worker --loglevel INFO --pool {pool} --concurrency {conc}")
        ceiling, cdone = drain(env_, tasks, timeout=tasks / 20 + 60)
        ceiling_cpu = (ceiling_proc.cpu_seconds() - ceiling_proc.cpu_at_ready) * 1000 / max(cdone, 1)
        run.stop()
        report.add(name, f"ceiling (no-op, {pool}/{conc}) tasks/s", ceiling)
        report.add(name, "ceiling worker CPU ms/task", ceiling_cpu)

        env_.reset()
        sandbox.reset()
        naive_tasks = min(tasks, 400)  # ~20/s: a short run gives the steady rate
        enqueue_ref(app, "ref.naive", naive_tasks, sandbox.url)
        run.start("celery -A bench.reference worker --loglevel INFO --pool prefork")
        naive, _ = drain(env_, naive_tasks, timeout=naive_tasks / 5 + 60)
        run.stop()
        report.add(name, f"naive (requests.post, prefork/{os.cpu_count()}) tasks/s", naive)
        r_ceiling = rate / ceiling if ceiling else float("nan")
        r_naive = rate / naive if naive else float("nan")
        report.add(name, "ours / ceiling", r_ceiling, ">= 0.6", r_ceiling >= 0.6)
        report.add(name, "ours / naive", r_naive, ">= 20", r_naive >= 20)


#: Rounds of bench/sentry_cpu.py's measurement, off and on, per Sentry scenario.
SENTRY_CPU_ROUNDS = 3
#: The Sentry ratio a worker bound by its CPU would show: its CPU per send without Sentry against
#: that plus what bench/sentry_cpu.py measures Sentry adding.
SENTRY_CPU_BOUND = "with Sentry / without, from CPU per send (worker without + Sentry's added in one process)"


def sentry(report: Report, broker: str, rounds: int = 3) -> None:
    """Throughput with ``SENTRY_DSN`` set (a local receiver that answers) against without; best of ``rounds``."""
    tasks = min(n_tasks(), 2000)
    name = f"sentry/{broker}"
    best: dict[str, tuple[float, float]] = {}
    with SentryReceiver() as receiver, perf_stack(broker) as (env_, sandbox, run):
        for _ in range(rounds):
            for label, extra in (("without", {}), ("with", {"SENTRY_DSN": receiver.dsn})):
                rate, done, procs = _ours_run(env_, sandbox, run, tasks, extra_env=extra)
                cpu = (procs[0].cpu_seconds() - procs[0].cpu_at_ready) * 1000 / max(done, 1)
                run.stop()
                if done == tasks and rate > best.get(label, (0.0, 0.0))[0]:
                    best[label] = (rate, cpu)
        assert receiver.bodies, "the Sentry receiver got nothing"
        sampled, added = _sentry_cpu(receiver.dsn)
    for label in ("without", "with"):
        rate, cpu = best.get(label, (float("nan"), float("nan")))
        report.add(name, f"{label} SENTRY_DSN: tasks/s; worker CPU ms/task", f"{rate:.1f}; {cpu:.2f}")
    ratio = best["with"][0] / best["without"][0] if len(best) == 2 else float("nan")
    report.add(name, "with Sentry / without", ratio, ">= 0.9", ratio >= 0.9)
    report.add(name, f"Sentry's CPU µs per send, one process, traces at {sampled} (median of {SENTRY_CPU_ROUNDS})", added)
    send_ms = best.get("without", (0.0, float("nan")))[1]
    estimate = send_ms / (send_ms + added / 1000)
    report.add(name, SENTRY_CPU_BOUND, estimate)


def _sentry_cpu(receiver_dsn: str) -> tuple[float, float]:
    """The default traces sample rate, and the median CPU µs Sentry adds to a send in one process
    (bench/sentry_cpu.py), off and on alternating: the figure behind the ratio above, which moves
    with the rest of the host where this does not."""
    rounds = [(sentry_cpu.measure(receiver_dsn), sentry_cpu.measure("")) for _ in range(SENTRY_CPU_ROUNDS)]
    return rounds[0][0]["traces_sample_rate"], statistics.median(on["process_us"] - off["process_us"] for on, off in rounds)


def latency(report: Report, broker: str, tasks: int = 500, rate: float = 50.0) -> None:
    """Enqueue -> Submit arrival at the sandbox, at a steady ``rate`` per second."""
    name = f"latency/{broker}"
    goal = 20 if broker == "redis" else 30
    with perf_stack(broker) as (env_, sandbox, run):
        run.start(procfile_worker())
        app = producer(env_)
        warm_up(env_, app, run)
        time.sleep(0.5)
        sandbox.reset()
        mobiles = fresh_mobiles(tasks)
        sent: dict[str, float] = {}
        start = time.monotonic()
        for i, m in enumerate(mobiles):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent.update(enqueue_ours(app, [m]))
        wait_until(lambda: len(sandbox.calls("Submit")) >= tasks, 60, 0.1)
        arrived = {c["mobile"]: c["at"] for c in sandbox.calls("Submit")}
        lat = [(arrived[m] - sent[m]) * 1000 for m in mobiles if m in arrived]
        report.add(name, "enqueue->Submit p50 (ms)", percentile(lat, 50))
        report.add(name, "enqueue->Submit p95 (ms)", percentile(lat, 95))
        p99 = percentile(lat, 99)
        report.add(name, "enqueue->Submit p99 (ms)", p99, f"<= {goal}", p99 <= goal and len(lat) == tasks)
        report.add(name, "enqueue->Submit max (ms)", max(lat) if lat else float("nan"))


def _probe_totals(probe_dir: Path) -> dict[str, int]:
    totals = {"redis_round_trips": 0, "published": 0}
    for f in probe_dir.glob("*.json"):
        try:
            data = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        for k in totals:
            totals[k] += data.get(k, 0)
    return totals


def _redis_cpu(client: redis.Redis) -> float:
    """The server's CPU seconds so far (user + sys, ``INFO cpu``)."""
    cpu = client.info("cpu")
    return cpu["used_cpu_user"] + cpu["used_cpu_sys"]


def _redis_memory(client: redis.Redis) -> int:
    """The server's memory in use, in bytes (``INFO memory``)."""
    return client.info("memory")["used_memory"]


def _commandstats(client: redis.Redis) -> dict[str, int]:
    return {k: v["calls"] for k, v in client.info("commandstats").items()}


def cost(report: Report, broker: str) -> None:
    """Per successful task, at steady state with the worker running: Redis round trips, messages, CPU."""
    tasks = min(n_tasks(), 2000)
    name = f"cost/{broker}"
    with perf_stack(broker) as (env_, sandbox, run):
        probe_dir = run.tmp / "probe"
        probe_dir.mkdir()
        proc = run.start(procfile_worker(), {"VCBENCH_PROBE_DIR": str(probe_dir),
                                             "PYTHONPATH": str(ROOT / "bench" / "probe")})
        app = producer(env_)
        warm = warm_up(env_, app, run)
        time.sleep(1.0)
        env_.server().config_resetstat()
        probe0, cpu0, redis0 = _probe_totals(probe_dir), proc.cpu_seconds(), _redis_cpu(env_.server())
        memory0 = _redis_memory(env_.server())
        enqueue_ours(app, fresh_mobiles(tasks))
        wait_until(lambda: env_.results_count() >= warm + tasks, tasks / 20 + 60, 0.05)
        time.sleep(0.5)  # let the probe files catch up
        probe1, cpu1, redis1 = _probe_totals(probe_dir), proc.cpu_seconds(), _redis_cpu(env_.server())
        stats = _commandstats(env_.server())
        memory1 = _redis_memory(env_.server())
        done = env_.results_count() - warm
        submitted = len([c for c in sandbox.calls("Submit") if c["reply"] == 2]) - warm
        per = max(submitted, 1)
        top = sorted(stats.items(), key=lambda kv: -kv[1])[:6]
        report.add(name, "worker Redis round trips/task", (probe1["redis_round_trips"] - probe0["redis_round_trips"]) / per)
        report.add(name, "Redis server commands/task (all clients, incl. Lua-internal)", sum(stats.values()) / per)
        report.add(name, "top Redis commands/task", ", ".join(f"{k.removeprefix('cmdstat_')} {v / per:.2f}" for k, v in top))
        report.add(name, "broker messages/task (1 consumed + worker publishes)",
                   1 + (probe1["published"] - probe0["published"]) / per)
        report.add(name, "worker CPU ms/task", (cpu1 - cpu0) * 1000 / per)
        report.add(name, "Redis CPU µs/task (every role on one Redis; bench/roles.py splits it)",
                   (redis1 - redis0) * 1e6 / per)
        report.add(name, "Redis memory bytes/task held after it (its record and results, kept a day)",
                   (memory1 - memory0) / per)
        report.add(name, "submitted", f"{submitted} of {tasks} (results {done})", str(tasks), submitted == tasks)


def scale(report: Report, broker: str) -> None:
    """Throughput with 1, 2, 4 worker processes; RSS per process; memory with 10,000 queued."""
    tasks = n_tasks()
    name = f"scale/{broker}"
    with perf_stack(broker) as (env_, sandbox, run):
        for workers in (1, 2, 4):
            rate, done, procs = _ours_run(env_, sandbox, run, tasks, workers)
            rss = [p.rss() for p in procs]
            run.stop()
            report.add(name, f"{workers} worker(s) tasks/s", rate)
            report.add(name, f"{workers} worker(s) RSS per process (MB)", sum(rss) / len(rss))
            if done != tasks:
                report.add(name, f"{workers} worker(s) completed", f"{done} of {tasks}", str(tasks), False)
    # 10,000 tasks queued behind a slow ihuyi (2 s per Submit): the worker holds only its prefetch.
    with perf_stack(broker, latency_ms=2000) as (env_, sandbox, run):
        proc = run.start(procfile_worker())
        before = proc.rss()
        peak = [before]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                peak.append(proc.rss())

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        enqueue_ours(producer(env_), fresh_mobiles(10_000))
        time.sleep(5)
        stop.set()
        sampler.join()
        report.add(name, "RSS idle (MB)", before)
        report.add(name, "RSS with 10,000 queued (MB)", max(peak), f"< {before + 50:.0f}", max(peak) - before < 50)
