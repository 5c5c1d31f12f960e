"""The two references the throughput benchmark compares the service with (a Celery app of their own).

- ``ref.naive``: the seed sample's way — a plain task that makes one ``requests.post`` per call,
  a new connection every time, run on Celery's default prefork pool;
- ``ref.noop``: a bare task that does nothing, run with the service's own pool settings.

Both go through the same broker as the service (``REF_BROKER_URL``); results land in
``REF_RESULT_BACKEND`` (a Redis database of their own) so completions can be counted with DBSIZE.

Run: ``celery -A bench.reference worker --pool ... --concurrency ...``.
"""
from __future__ import annotations

import os

import requests
from celery import Celery

QUEUE = "vcbench.ref"


def _url(name: str) -> str:
    """Set by bench/perf.py to its private servers; no default, so no Redis of anybody else's is used."""
    try:
        return os.environ[name]
    except KeyError:
        raise RuntimeError(f"{name} is not set: bench/perf.py sets it to its private redis-server; "
                           "to run bench.reference alone, set REF_BROKER_URL and REF_RESULT_BACKEND") from None


app = Celery("vcbench-ref", broker=_url("REF_BROKER_URL"), backend=_url("REF_RESULT_BACKEND"))
app.conf.update(
    task_default_queue=QUEUE,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_connection_retry_on_startup=True,
    # The same delivery guarantees as the service, so the ceiling is a like-for-like one.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
)


@app.task(name="ref.naive")
def naive(url: str, account: str, password: str, mobile: str, content: str) -> str:
    """The seed sample: a fresh connection per call, no session, no pool."""
    reply = requests.post(url + "?method=Submit", data={"account": account, "password": password,
                                                       "mobile": mobile, "content": content}, timeout=10)
    return reply.text[:200]


@app.task(name="ref.noop")
def noop() -> None:
    return None
