"""Recovery benchmark: a SIGKILLed worker's codes on Redis, from the reliability suite's own scenario.

The scenario (tests/test_reliability.py, ``test_redis_worker_killed_its_messages_back_within_seconds``)
is run as it is in the suite; it records its numbers in a file this reads back.
"""
from __future__ import annotations

import json
import subprocess
import sys

from bench.harness import Report
from tests.support import ROOT

TEST = "tests/test_reliability.py::test_redis_worker_killed_its_messages_back_within_seconds"
RECORD = "worker_killed_redis_heartbeat"


def recovery(report: Report, broker: str) -> None:
    """120 tasks, ihuyi at 1.5 s, the worker SIGKILLed with about 60 Submits in flight; a new one started at once."""
    if broker != "redis":
        return  # RabbitMQ hands a dead consumer's messages back at once
    from tests.test_reliability import NUMBERS_FILE

    NUMBERS_FILE.unlink(missing_ok=True)
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", TEST], cwd=ROOT,
                         capture_output=True, text=True)
    name = f"recovery/{broker}"
    try:
        numbers = json.loads(NUMBERS_FILE.read_text())[RECORD]
    except (OSError, ValueError, KeyError):
        report.add(name, "scenario", f"did not run: {run.stdout.strip().splitlines()[-1:]}", "passes", False)
        return
    last, lost, dupes = numbers["last_code_after_kill_s"], numbers["lost"], numbers["duplicate_submits"]
    report.add(name, "last code sent after the kill (s)", float(last), "<= 15", last <= 15)
    report.add(name, "lost; duplicates / in flight at the kill", f"{lost}; {dupes} / {numbers['in_flight_at_kill']}",
               "0; <= in flight", lost == 0 and dupes <= numbers["in_flight_at_kill"])
