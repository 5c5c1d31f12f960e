"""The web-app examples of README.md, executed exactly as written against a real worker.

Each example runs in a Flask test client in its own process (with the service's
environment, as the web app would have), so the docs cannot rot.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid

import pytest

from tests.stacks import redis_stack
from tests.support import ROOT, submits, unique_mobile

DOC = ROOT / "README.md"

# Runs one example: argv = source, mobile, nonce. Prints one JSON line of what the views answered.
PRODUCER = """
import json, sys
source, mobile, nonce = sys.argv[1:]
ns = {"__name__": "webapp_producer"}
exec(compile(source, "README.md", "exec"), ns)
client = ns["app"].test_client()
post = lambda **form: (lambda r: [r.status_code, r.get_json()])(client.post("/login/voice-code", data=form))
from worker.app import app as service
sent = post(mobile=mobile, nonce=nonce)
result = service.AsyncResult(sent[1]["task_id"]).get(timeout=30)
print(json.dumps({"sent": sent, "result": result, "again": post(mobile=mobile, nonce=nonce + "-2"),
                  "invalid": post(mobile="12345", nonce=nonce + "-3"), "stored": mobile in ns["codes"]}))
"""

BY_NAME = """
import json, sys
source, mobile, nonce = sys.argv[1:]
ns = {"__name__": "webapp_by_name"}
exec(compile(source, "README.md", "exec"), ns)
client = ns["app"].test_client()
answers = [client.post("/login/voice-code", data={"mobile": mobile, "nonce": nonce}) for _ in range(2)]
results = [ns["celery_app"].AsyncResult(a.get_json()["task_id"]).get(timeout=30) for a in answers]
ours = sorted({m.split(".")[0] for m in sys.modules} & {"tasks", "worker", "config", "ihuyi"})
print(json.dumps({"status": [a.status_code for a in answers], "results": results, "imported": ours}))
"""

pytestmark = pytest.mark.e2e


def example(title: str) -> str:
    """The fenced Python block of the doc whose first line is ``# <title>``."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    [source] = [b for b in blocks if b.startswith(f"# {title}")]
    return source


@pytest.fixture(scope="module")
def stack(sandbox):
    with redis_stack(sandbox, MOBILE_THROTTLE="1/60s") as stack:
        stack.start_worker(concurrency=4)
        yield stack


def run(stack, harness: str, source: str, mobile: str) -> dict:
    env = {**stack.env, "CELERY_RESULT_BACKEND": stack.backend.state}
    done = subprocess.run([sys.executable, "-c", harness, source, mobile, f"n-{uuid.uuid4().hex}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_producer_api_example(stack, sandbox):
    mobile = unique_mobile("138")
    out = run(stack, PRODUCER, example("webapp_producer.py"), mobile)
    assert out["sent"][0] == 202 and out["result"]["status"] == "submitted"
    assert out["result"]["request_id"].startswith("login:n-")
    assert out["again"][0] == 429 and out["again"][1]["retry_after"] > 0  # MOBILE_THROTTLE 1/60s
    assert out["invalid"] == [400, {"error": "invalid mobile"}]
    assert out["stored"]
    assert len(submits(sandbox, mobile)) == 1


def test_by_name_example_does_not_import_the_project(stack, sandbox):
    mobile = unique_mobile("139")
    out = run(stack, BY_NAME, example("webapp_by_name.py"), mobile)
    assert out["imported"] == []
    assert out["status"] == [202, 202]
    assert sorted(r["status"] for r in out["results"]) == ["duplicate", "submitted"], out  # the same nonce: one call
    assert len(submits(sandbox, mobile)) == 1
