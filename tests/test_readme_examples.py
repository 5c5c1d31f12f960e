"""The web-app examples of README.md, executed exactly as written against a real worker.

Each runs in a process of its own, as the web app would: the producer's two (Flask, Django)
with nothing but the broker and state URLs and ``VOICECODE_SECRET`` in their environment, the
by-name one with the broker's. So the docs cannot rot; examples/ holds the same code.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid

import pytest

from ihuyi.sandbox import PATH
from tests.support import ROOT, submits, unique_mobile
from tests.tasks.backends import own_stack

DOC = ROOT / "README.md"

# Runs a verification example: argv = framework, source, mobile, nonce, sandbox URL. Posts to its
# views as a browser would, the code read from the sandbox's Submit; prints one JSON line.
VERIFY = """
import json, os, sys, time, urllib.request
framework, source, mobile, nonce, sandbox = sys.argv[1:]
if framework == "django":
    import types
    import django
    from django.conf import settings
    settings.configure(ROOT_URLCONF="webapp_django", ALLOWED_HOSTS=["testserver"], MIDDLEWARE=[], SECRET_KEY="x")
    django.setup()
    module = sys.modules["webapp_django"] = types.ModuleType("webapp_django")
    exec(compile(source, "README.md", "exec"), module.__dict__)
    from django.test import Client
    client = Client()
    post = lambda path, **form: (lambda r: [r.status_code, r.json()])(client.post(path, form))
else:
    ns = {"__name__": "webapp_flask"}
    exec(compile(source, "README.md", "exec"), ns)
    client = ns["app"].test_client()
    post = lambda path, **form: (lambda r: [r.status_code, r.get_json()])(client.post(path, data=form))

def spoken():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        calls = json.load(urllib.request.urlopen(sandbox + "/_sandbox/calls?method=Submit"))
        if [c for c in calls if c["mobile"] == mobile]:
            return [c["content"] for c in calls if c["mobile"] == mobile]
        time.sleep(0.05)
    raise SystemExit("no Submit for the number")

started = post("/login/voice-code", mobile=mobile, nonce=nonce)
again = post("/login/voice-code", mobile=mobile, nonce=nonce)
code = spoken()[0]
print(json.dumps({
    "started": started, "again": again,
    "wrong": post("/login/check", mobile=mobile, code=f"{(int(code) + 1) % 10**6:06d}"),
    "right": post("/login/check", mobile=mobile, code=code),
    "reused": post("/login/check", mobile=mobile, code=code),
    "throttled": post("/login/voice-code", mobile=mobile, nonce=nonce + "-2"),
    "invalid": post("/login/voice-code", mobile="12345", nonce=nonce + "-3"),
    "ihuyi": sorted(name for name in os.environ if name.startswith("IHUYI_")),
    "loaded": sorted({"worker.app", "worker.celeryconf", "tasks.voice"} & set(sys.modules)),
}))
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
    with own_stack("redis", sandbox, MOBILE_THROTTLE="1/60s", VOICECODE_SECRET="readme-secret-5b1d2c3e") as stack:
        yield stack


def run(harness: str, env: dict[str, str], *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", harness, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("framework", ["flask", "django"])
def test_verification_example_with_the_producer_alone(stack, sandbox, framework):
    source = example(f"webapp_{framework}.py")
    assert source == (ROOT / "examples" / f"webapp_{framework}.py").read_text()
    web_app = {name: stack.env[name] for name in ("CELERY_BROKER_URL", "REDIS_URL", "VOICECODE_SECRET", "MOBILE_THROTTLE")}
    env = {**web_app, "PATH": os.environ["PATH"], "VOICECODE_ENV_FILE": os.devnull}
    mobile = unique_mobile("138")
    out = run(VERIFY, env, framework, source, mobile, f"n-{uuid.uuid4().hex}", sandbox.url.removesuffix(PATH))
    assert out["started"][0] == 202 and set(out["started"][1]) == {"verification_id", "expires_at"}
    assert out["again"] == out["started"]  # the double submit: the same verification
    assert out["wrong"] == [403, {"status": "rejected", "attempts_left": 4}]
    assert out["right"] == [200, {"status": "approved", "attempts_left": 0}]
    assert out["reused"] == [403, {"status": "not_found", "attempts_left": 0}]
    assert out["throttled"][0] == 429 and 0 < out["throttled"][1]["retry_after"] <= 60  # MOBILE_THROTTLE 1/60s
    assert out["invalid"] == [400, {"error": "invalid mobile"}]
    assert (out["ihuyi"], out["loaded"]) == ([], [])
    assert len(submits(sandbox, mobile)) == 1


def test_by_name_example_does_not_import_the_project(stack, sandbox):
    mobile = unique_mobile("139")
    env = {**stack.env, "CELERY_RESULT_BACKEND": stack.backend.state}
    out = run(BY_NAME, env, example("webapp_by_name.py"), mobile, f"n-{uuid.uuid4().hex}")
    assert out["imported"] == []
    assert out["status"] == [202, 202]
    assert sorted(r["status"] for r in out["results"]) == ["duplicate", "submitted"], out  # the same nonce: one call
    assert len(submits(sandbox, mobile)) == 1
