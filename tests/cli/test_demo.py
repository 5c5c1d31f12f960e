"""``voicecode demo`` as a user runs it: a subprocess against a worker and the sandbox, or alone."""
from __future__ import annotations

import os
import signal
import socket
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from cli.demo import Demo, Scenario
from tests.servers import free_port
from tests.stacks import redis_stack
from tests.support import ROOT, base_env

FORCED_CODES = (4030, 405, 4050, 4051, 408)
OUTCOMES = ("submitted", "duplicate", "expired", "throttled", "refused: Throttled", "dead_lettered", "account_paused",
            "rejected (4 left)", "approved", "not_found")

pytestmark = pytest.mark.e2e


def test_demo_ends_every_scenario_as_expected(sandbox, fresh_sandbox):
    with redis_stack(sandbox, MOBILE_THROTTLE="1/60s,5/h,10/d", VOICECODE_SECRET="demo-secret-7a6b5c4d") as stack:
        stack.start_worker(concurrency=8)
        done = subprocess.run([sys.executable, "-m", "cli", "demo", "--timeout", "60"], cwd=ROOT,
                              env=stack.env, capture_output=True, timeout=90)  # bytes: keep any \r
        accounts = stack.cli("accounts").stdout
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert done.stderr == b""  # the worker and the sandbox were up: nothing started
    table = table_after_progress(done.stdout.decode())
    rows = table.splitlines()[1:-1]
    assert len(rows) == 18 and all(row.endswith("  ok") for row in rows)
    for outcome in OUTCOMES:
        assert any(f"  {outcome}  " in row for row in rows), outcome
    for code in FORCED_CODES:
        assert re.search(rf"ihuyi answers {code} .* dead_lettered +{code} +1  ok$", table, re.MULTILINE)
    assert table.splitlines()[-1] == "18/18 scenarios ended as expected"
    assert "paused" not in accounts  # the demo resumed the account it paused


def table_after_progress(out: str) -> str:
    """The table, after the progress: into a pipe a line each time the count moves, never a bare \\r."""
    assert "\r" not in out
    lines = out.splitlines()
    progress = [line for line in lines if re.fullmatch(r"\d+/18 done", line)]
    assert lines[:len(progress)] == progress and progress[-1] == "18/18 done"
    counts = [int(line.split("/")[0]) for line in progress]
    assert counts == sorted(set(counts))  # each count once, going up
    return "\n".join(lines[len(progress):])


def test_demo_refuses_to_run_without_the_sandbox(sandbox):
    # Not plain http: no sandbox is started for it (and nothing but loopback is ever asked).
    with redis_stack(sandbox, IHUYI_API_URL="https://127.0.0.1:9/webservice/voice.php") as stack:
        done = stack.cli("demo", timeout=60)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "sandbox" in done.stderr


def alone_env(short_tmp, port: int) -> dict[str, str]:
    """A fresh clone's: the embedded Redis (not running), IHUYI_API_URL on loopback where nothing listens."""
    return base_env(f"http://127.0.0.1:{port}/webservice/voice.php", VOICECODE_STATE_DIR=str(short_tmp / "state"),
                    MOBILE_THROTTLE="1/60s,5/h,10/d", VOICECODE_SECRET="demo-secret-7a6b5c4d")


def leftovers(pattern: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_demo_alone_starts_what_it_needs_and_stops_it_after(short_tmp):
    port = free_port()
    demo = subprocess.Popen([sys.executable, "-m", "cli", "demo", "--timeout", "60"], cwd=ROOT,
                            env=alone_env(short_tmp, port), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = demo.communicate(timeout=150)
    finally:
        demo.kill()
        for pid in leftovers(f"demo-{demo.pid}@"):  # the worker it started, should it still be there
            os.kill(pid, signal.SIGKILL)
    assert demo.returncode == 0, out + err
    assert err.splitlines() == [f"started a sandbox at http://127.0.0.1:{port}/webservice/voice.php for the demo",
                                "started a worker for account 'default' for the demo"]
    table = table_after_progress(out)
    assert table.splitlines()[-1] == "18/18 scenarios ended as expected"
    assert leftovers(f"demo-{demo.pid}@") == []  # the worker stopped
    assert leftovers(str(short_tmp)) == []  # and the embedded Redis
    assert not (short_tmp / "state" / "redis.sock").exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()  # and the sandbox


def test_demo_alone_refuses_a_port_something_else_holds(short_tmp):
    other = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)  # a web server, not the sandbox
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        done = subprocess.run([sys.executable, "-m", "cli", "demo", "--timeout", "60"], cwd=ROOT,
                              env=alone_env(short_tmp, other.server_address[1]), capture_output=True, text=True,
                              timeout=90)
    finally:
        other.shutdown()
        other.server_close()
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.startswith("voicecode: the demo runs against the sandbox only, and http://127.0.0.1:")
    assert done.stderr.endswith("is not one, and none can be started there (Address already in use)\n")
    assert not (short_tmp / "state" / "redis.sock").exists()  # the embedded Redis it started is stopped


class ReadyOnSecondLook:
    """A task's result as the demo polls it: not ready the first time it is asked, ready after."""

    def __init__(self) -> None:
        self.asked = 0

    def ready(self) -> bool:
        self.asked += 1
        return self.asked > 1

    def get(self, propagate: bool = True) -> dict:
        return {"status": "submitted"}


def test_the_progress_shows_the_last_count_before_the_table(capsys):
    """A result that arrives between the count and the check for the end is counted before the end."""
    demo = Demo(total=1, deadline=time.monotonic() + 10)
    demo.run([(Scenario("one", "submitted"), ReadyOnSecondLook)])
    assert capsys.readouterr().out.splitlines() == ["0/1 done", "1/1 done"]
