"""``voicecode demo`` as a user runs it: a subprocess against a worker and the sandbox."""
from __future__ import annotations

import pytest

import re
import subprocess
import sys

from tests.stacks import redis_stack
from tests.support import ROOT

FORCED_CODES = (4030, 405, 4050, 4051, 408)
OUTCOMES = ("submitted", "duplicate", "expired", "throttled", "refused: Throttled", "dead_lettered", "account_paused",
            "rejected (4 left)", "approved", "not_found")

pytestmark = pytest.mark.e2e


def test_demo_ends_every_scenario_as_expected(sandbox, fresh_sandbox):
    with redis_stack(sandbox, MOBILE_THROTTLE="1/60s,5/h,10/d", VOICECODE_SECRET="demo-secret-7a6b5c4d") as stack:
        stack.start_worker(concurrency=8)
        done = subprocess.run([sys.executable, "-m", "worker.cli", "demo", "--timeout", "60"], cwd=ROOT,
                              env=stack.env, capture_output=True, timeout=90)  # bytes: keep the \r
        accounts = stack.cli("accounts").stdout
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    progress, _, table = out.partition("\n")
    assert re.fullmatch(r"(\r\d+/18 done)+", progress) and progress.endswith("\r18/18 done")
    rows = table.splitlines()[1:-1]
    assert len(rows) == 18 and all(row.endswith("  ok") for row in rows)
    for outcome in OUTCOMES:
        assert any(f"  {outcome}  " in row for row in rows), outcome
    for code in FORCED_CODES:
        assert re.search(rf"ihuyi answers {code} .* dead_lettered +{code} +1  ok$", table, re.MULTILINE)
    assert table.splitlines()[-1] == "18/18 scenarios ended as expected"
    assert "paused" not in accounts  # the demo resumed the account it paused


def test_demo_refuses_to_run_without_the_sandbox(sandbox):
    with redis_stack(sandbox, IHUYI_API_URL="http://127.0.0.1:9/webservice/voice.php") as stack:
        done = stack.cli("demo", timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "sandbox" in done.stderr
