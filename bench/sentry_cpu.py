"""What Sentry adds to a send's CPU, measured in one process: the figure behind the Sentry ratio.

The throughput ratio with and without ``SENTRY_DSN`` moves with everything else on the host;
this does not. ``python -m bench.sentry_cpu DSN RUNS`` starts Sentry as a worker process does
with the default settings (``init_sentry``, or nothing with an empty DSN) and does a send's
Sentry work ``RUNS`` times: Celery's task signals around the run (worker/ops/sentry.py), the
Submit's span, the outcome report (worker/ops/reporting.py) and Celery's two INFO lines per
task. It prints the traces sample rate and the CPU per run in microseconds as JSON: the calling
thread's, and the whole process's (the SDK's threads that serialise and send included). Run in
a process of its own, so the bench process never has Sentry on; the receiver runs in the bench
process and is not counted.
"""
from __future__ import annotations

import json
import logging
import os
import random
import subprocess
import sys
import time

from celery import signals, states

from config.settings import load_settings
from tests.support import ACCOUNTS, ROOT
from worker.ops.reporting import report_outcome
from worker.ops.sentry import init_sentry
from worker.sending.submit import traced_submit

WARM = 200
#: One send per millisecond at most: faster than one worker process sends, slow enough that the
#: SDK's queue of envelopes never overflows (a dropped transaction would cost nothing to send).
PACE_SECONDS = 0.001
_RESULT = {"status": "submitted", "mobile": "138****8000", "attempts": 1, "code": 2, "voiceid": "3716580201",
           "account": "default", "request_id": "login-7f3a"}


class _Task:
    name = "send_voice_code"


def _one_send(i: int, celery_log: logging.Logger) -> None:
    task_id = f"bench-{i}"
    celery_log.info("Task %s[%s] received", _Task.name, task_id)
    signals.task_prerun.send(sender=_Task, task_id=task_id, task=_Task, args=(), kwargs={})
    with traced_submit("http://127.0.0.1:8099/webservice/voice.php?method=Submit", "default"):
        pass
    report_outcome(_RESULT)
    signals.task_postrun.send(sender=_Task, task_id=task_id, task=_Task, args=(), kwargs={}, retval=_RESULT,
                              state=states.SUCCESS)
    celery_log.info("Task %s[%s] succeeded in %ss: %r", _Task.name, task_id, 0.1, _RESULT)


def _measure(dsn: str, runs: int) -> dict[str, float]:
    import sentry_sdk

    settings = load_settings({"SENTRY_DSN": dsn, "IHUYI_ACCOUNTS": json.dumps(ACCOUNTS)})
    on = init_sentry(settings, "worker")
    celery_log = logging.getLogger("celery.app.trace")
    celery_log.addHandler(logging.StreamHandler(open(os.devnull, "w")))
    celery_log.setLevel(logging.INFO)
    random.seed(0)  # the same runs sampled in every measurement
    for i in range(WARM):
        _one_send(i, celery_log)
    if on:
        sentry_sdk.flush(10)
    process, thread, started = time.process_time(), time.thread_time(), time.monotonic()
    for i in range(runs):
        _one_send(WARM + i, celery_log)
        ahead = started + i * PACE_SECONDS - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)
    thread = time.thread_time() - thread
    if on:
        sentry_sdk.flush(10)  # what the SDK's threads do for these runs is counted too
    process = time.process_time() - process
    return {"traces_sample_rate": settings.sentry_traces_sample_rate, "thread_us": thread * 1e6 / runs,
            "process_us": process * 1e6 / runs}


def measure(dsn: str, runs: int = 5000) -> dict[str, float]:
    """CPU µs per send of a process with Sentry at ``dsn`` (empty: off), and its traces sample rate."""
    out = subprocess.run([sys.executable, "-m", "bench.sentry_cpu", dsn, str(runs)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main(argv: list[str]) -> None:
    dsn, runs = argv
    print(json.dumps(_measure(dsn, int(runs))))


if __name__ == "__main__":
    main(sys.argv[1:])
