"""``voicecode worker``: N worker processes, each consuming, stopped together, a dead one noticed."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from cli.workers import START_SECONDS, child_hostname, split_hostname
from ihuyi.sandbox import Sandbox
from tests.conftest import SANDBOX_ACCOUNTS
from tests.stacks import redis_stack
from tests.support import ROOT, base_env, unique_mobile, wait_for


def test_each_process_gets_a_name_of_its_own() -> None:
    assert split_hostname(["--loglevel", "INFO", "-n", "x@%h", "-Q", "q"]) == ("x@%h", ["--loglevel", "INFO", "-Q", "q"])
    assert split_hostname(["--hostname=x@h"]) == ("x@h", [])
    assert split_hostname(["-nx@h", "-c", "4"]) == ("x@h", ["-c", "4"])
    assert split_hostname(["--loglevel", "INFO"]) == (None, ["--loglevel", "INFO"])
    assert [child_hostname(i, None) for i in (1, 2)] == ["w1@%h", "w2@%h"]
    assert child_hostname(2, "bench-3@%h") == "w2.bench-3@%h"


def test_a_process_that_cannot_start_stops_the_others() -> None:
    done = subprocess.run([sys.executable, "-m", "cli", "worker", "--processes", "2", "--no-such-option"], cwd=ROOT,
                          env=base_env("http://127.0.0.1:1/"), capture_output=True, text=True,
                          timeout=90)
    assert (done.returncode, "stopping the others" in done.stderr) == (2, True), done.stderr


_END_TOGETHER = """
import time
from cli import workers

def zombie(pid):
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] == "Z"

workers.celery_command = lambda hostname, args: ["sh", "-c", "exit 2"]
launcher = workers.Launcher(2, [])
pids = [launcher.start(index).process.pid for index in (1, 2)]
while not all(zombie(pid) for pid in pids):
    time.sleep(0.01)
print(launcher.watch(), launcher.children)
"""


def test_children_that_end_together_are_all_seen_to_end() -> None:
    """Both have exited before the launcher looks: stopping the second must not reap it behind the wait.

    In a process of its own, as the launcher is: its wait takes any child of the process."""
    done = subprocess.run([sys.executable, "-c", _END_TOGETHER], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.stdout.split("\n")[-2:] == ["2 {}", ""], done.stderr


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def slow_sandbox():
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=200) as box:
        yield box


def test_two_processes_consume_a_dead_one_is_replaced_and_sigterm_stops_all(slow_sandbox: Sandbox) -> None:
    with redis_stack(slow_sandbox, WORKER_CONCURRENCY="2", WORKER_PROCESSES="2") as stack:
        name = f"t-{uuid.uuid4().hex[:6]}"
        log = stack.tmp / "launcher.log"
        started = time.monotonic()
        launcher = subprocess.Popen([sys.executable, "-m", "cli", "worker", "--loglevel", "INFO", "-n", f"{name}@%h",
                                     "--without-gossip", "--without-mingle"], cwd=ROOT, env=stack.env,
                                    stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
        try:
            text = lambda: log.read_text(errors="replace")  # noqa: E731
            wait_for(lambda: text().count(" ready.") >= 2 or launcher.poll() is not None, 90, 0.1, "two workers ready")
            assert launcher.poll() is None, text()
            inspect = stack.client.control.inspect(timeout=3)
            results = [stack.send(unique_mobile("138"), "4821") for _ in range(24)]
            assert all(r.get(timeout=60)["status"] == "submitted" for r in results)
            stats = inspect.stats()
            nodes = sorted(n for n in stats if n.endswith(name + "@" + n.split("@", 1)[1]))
            assert [n.split("@")[0] for n in nodes] == [f"w1.{name}", f"w2.{name}"], stats.keys()
            assert all(stats[n]["total"].get("send_voice_code", 0) > 0 for n in nodes), {n: stats[n]["total"] for n in nodes}
            pids = {n: stats[n]["pid"] for n in nodes}

            # One killed (past its start) while both hold tasks: noticed, started again under its name,
            # and what it held is given back and sent.
            time.sleep(max(0.0, START_SECONDS + 1 - (time.monotonic() - started)))
            held = [stack.send(unique_mobile("138"), "4821") for _ in range(16)]
            wait_for(lambda: len(slow_sandbox.calls("Submit")) >= 24 + 4, 30, 0.02, "both busy")
            os.kill(pids[nodes[1]], signal.SIGKILL)
            wait_for(lambda: "started again" in text(), 30, 0.1, "the launcher to replace the dead worker")
            assert re.search(rf"w2\.{name}@\S+ \(pid {pids[nodes[1]]}\) died \(killed by SIGKILL\)", text())
            wait_for(lambda: text().count(" ready.") >= 3, 90, 0.1, "the new worker ready")
            # A worker answers control messages a moment after its "ready." on a loaded machine.
            wait_for(lambda: {n.split("@")[0] for n in inspect.ping() or {}} >= {f"w1.{name}", f"w2.{name}"}, 30, 0.1,
                     "both workers answering")
            assert all(r.get(timeout=60)["status"] in ("submitted", "duplicate") for r in held)
            more = [stack.send(unique_mobile("138"), "4821") for _ in range(8)]
            assert all(r.get(timeout=60)["status"] == "submitted" for r in more)
            children = [int(p) for p in open(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read().split()]
            assert len(children) == 2 and pids[nodes[0]] in children and pids[nodes[1]] not in children

            # SIGTERM: every process stops, warm, and the launcher with them.
            launcher.send_signal(signal.SIGTERM)
            assert launcher.wait(60) == 0, text()[-3000:]
            assert not any(_alive(pid) for pid in children)
            assert text().count("stopped (exit status 0)") == 2
        finally:
            if launcher.poll() is None:
                os.killpg(launcher.pid, signal.SIGKILL)
                launcher.wait()
