"""Real parts for the end-to-end tests: a stack (broker + state Redis + worker processes) per backend.

Tests talk to it the way a web app and an operator would: enqueue through Celery by task
name, read results, run the ``voicecode`` CLI, count Submit calls at the sandbox.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kombu
import redis
from celery import Celery
from celery.result import AsyncResult

from tests.servers import amqp_url, redis_url
from worker.stores.deadletters import DeadLetterStore
from worker.sending.masking import masked_call

ROOT = Path(__file__).resolve().parent.parent
APIID = "test-apiid"
APIKEY = "k3y-S3CR3T-9f1c27ab"  # scanned for in every log, result and envelope
SPARE_APIID, SPARE_APIKEY = "spare-apiid", "sp4re-S3CR3T-77d0e1"
#: Every account the tests configure: name -> its IHUYI_ACCOUNTS entry.
ACCOUNTS = {
    "default": {"apiid": APIID, "apikey": APIKEY, "rate_limit": "1000/s"},
    "spare": {"apiid": SPARE_APIID, "apikey": SPARE_APIKEY, "rate_limit": "1000/s"},
    "main": {"apiid": "main-apiid", "apikey": "m4in-S3CR3T-0c4d2e", "rate_limit": "1000/s", "fallback": "backup"},
    "backup": {"apiid": "backup-apiid", "apikey": "b4ckup-S3CR3T-5e6f70", "rate_limit": "1000/s"},
    "slow": {"apiid": "slow-apiid", "apikey": "sl0w-S3CR3T-a1b2c3", "rate_limit": "10/s", "burst": 2},
}
SANDBOX_ACCOUNTS = {spec["apiid"]: spec["apikey"] for spec in ACCOUNTS.values()}
SECRETS = [spec["apikey"] for spec in ACCOUNTS.values()]


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, what: str = "condition") -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Backend:
    """Where broker, results and state live for one parametrization."""

    name: str
    env: dict[str, str]
    broker: str
    state: str

    def flush(self) -> None:
        redis.Redis.from_url(self.state).flushdb()
        if self.broker.startswith("amqp"):
            with kombu.Connection(self.broker) as conn:
                channel = conn.channel()
                try:
                    channel.queue_purge("voicecode")
                except conn.channel_errors:  # not declared yet: nothing to purge
                    pass


def make_backend(name: str, tmp: Path, redis_db: int = 11) -> Backend:
    """The backend ``name`` on the session's own servers (tests/servers.py); ``redis_db`` (and
    the next one) keep the stacks of one session apart."""
    if name == "embedded":
        from worker.stores import embedded

        state_dir = tmp / "state"
        sock = embedded.ensure_running(state_dir)
        return Backend(name, {"VOICECODE_STATE_DIR": str(state_dir)}, f"redis+socket://{sock}", f"unix://{sock}")
    if name == "redis":
        url = redis_url(redis_db)
        return Backend(name, {"CELERY_BROKER_URL": url, "REDIS_URL": url}, url, url)
    state = redis_url(redis_db + 1)
    broker = amqp_url()
    return Backend(name, {"CELERY_BROKER_URL": broker, "REDIS_URL": state}, broker, state)


def base_env(sandbox_url: str, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "REDIS_", "IHUYI_", "SENTRY_", "VOICE", "FLOWER_", "MOBILE_", "BALANCE_", "ALERT_"))}
    env.update(
        IHUYI_API_URL=sandbox_url,
        IHUYI_ACCOUNTS=json.dumps(ACCOUNTS),
        IHUYI_CONNECT_TIMEOUT="1",
        IHUYI_READ_TIMEOUT="1",
        VOICECODE_RETRY_BASE="0.05",
        VOICECODE_RETRY_CAP="0.4",
        VOICECODE_MAX_ATTEMPTS="5",
        MOBILE_THROTTLE="",
        REDIS_VISIBILITY_TIMEOUT="10",
        PYTHONUNBUFFERED="1",
        VOICECODE_ENV_FILE=os.devnull,
    )
    env.update(overrides)
    return env


@dataclass
class Worker:
    process: subprocess.Popen
    log: Path

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Stack:
    """A backend plus the environment every process of the service under test runs with."""

    backend: Backend
    env: dict[str, str]
    tmp: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def client(self) -> Celery:
        if not hasattr(self, "_client"):
            self._client = Celery("test-producer", broker=self.backend.broker,
                                  backend=self.backend.state.replace("unix://", "redis+socket://"))
            self._client.conf.update(task_default_queue="voicecode", result_serializer="json",
                                     accept_content=["json"], broker_connection_retry_on_startup=True)
        return self._client

    def start_worker(self, *extra: str, concurrency: int = 8, name: str | None = None, env: dict[str, str] | None = None) -> Worker:
        name = name or f"w{len(self.workers)}-{uuid.uuid4().hex[:6]}"
        log = self.tmp / f"{name}.log"
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--loglevel", "INFO",
             "--concurrency", str(concurrency), "--hostname", f"{name}@%h", "--without-gossip",
             "--without-mingle", *extra],
            cwd=ROOT, env={**self.env, **(env or {})}, stdout=log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        worker = Worker(process, log)
        self.workers.append(worker)
        wait_for(lambda: "ready." in worker.text() or process.poll() is not None, 60, 0.1, f"worker {name} ready")
        assert process.poll() is None, worker.text()
        return worker

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def send(self, mobile: str, code: str, *, foreign: bool = False, **kwargs: Any) -> AsyncResult:
        """Enqueue as the producer API does (enqueued_at header, masked reprs), or as a foreign producer."""
        options: dict[str, Any] = {}
        if not foreign:
            argsrepr, kwargsrepr = masked_call((mobile, code), kwargs)
            options = {"headers": {"enqueued_at": time.time()}, "argsrepr": argsrepr, "kwargsrepr": kwargsrepr}
        return self.client.send_task("send_voice_code", (mobile, code), kwargs, **options)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cli", *args], cwd=ROOT, env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    @property
    def state(self) -> redis.Redis:
        return redis.Redis.from_url(self.backend.state)

    @property
    def dead_letters(self) -> DeadLetterStore:
        return DeadLetterStore(self.state)


def kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


_ISSUED_MOBILES: set[str] = set()


def unique_mobile(prefix: str = "139") -> str:
    """An 11-digit number starting with ``prefix`` (a sandbox magic prefix, or an ordinary one),
    never issued before in this process, so Submit calls counted by number are calls per task."""
    digits = 11 - len(prefix)
    while True:
        mobile = f"{prefix}{secrets.randbelow(10 ** digits):0{digits}d}"
        if mobile not in _ISSUED_MOBILES:
            _ISSUED_MOBILES.add(mobile)
            return mobile


def submits(sandbox: Any, mobile: str, since: float = 0.0) -> list[dict]:
    """The Submit calls that reached the sandbox for ``mobile`` (since a time, for shared magic numbers)."""
    return [c for c in sandbox.calls("Submit") if c["mobile"] == mobile and c["at"] >= since]
