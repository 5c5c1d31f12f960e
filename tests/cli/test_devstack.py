"""``voicecode with-embedded-redis`` (what ``make run`` runs honcho under): the embedded Redis is
up before the command and gone after it, Ctrl-C included, and its data is there the next time."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from cli.devstack import is_loopback_http
from tests.support import ROOT, wait_for
from worker.stores.embedded import process_alive

# Counts its runs in the embedded Redis: what a second `make run` finds of the first.
COUNT = ("import os, redis; "
         "print('runs:', redis.Redis(unix_socket_path=os.environ['VOICECODE_STATE_DIR'] + '/redis.sock').incr('runs'))")
COMMAND_WITH_PID = COUNT + "; print(open(os.environ['VOICECODE_STATE_DIR'] + '/redis.pid').read().strip())"


def env_for(state: Path, **extra: str) -> dict[str, str]:
    return {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "VOICECODE_ENV_FILE": os.devnull,
            "VOICECODE_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1", **extra}


def with_redis(state: Path, *command: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cli", "with-embedded-redis", *command], cwd=ROOT,
                          env=env_for(state, **extra), capture_output=True, text=True, timeout=60)


def test_the_redis_is_up_for_the_command_gone_after_it_and_its_data_kept(short_tmp):
    state = short_tmp / "state"
    first = with_redis(state, "--", sys.executable, "-c", COMMAND_WITH_PID)
    assert first.returncode == 0, first.stderr
    out = first.stdout.splitlines()
    assert out[0] == f"embedded Redis on {state}/redis.sock, stopped when this ends"
    assert out[1] == "runs: 1"
    assert out[-1] == f"stopping the embedded Redis (its data stays in {state})"
    pid = int(out[2])
    assert not process_alive(pid) and not (state / "redis.sock").exists()
    second = with_redis(state, sys.executable, "-c", COMMAND_WITH_PID)
    assert second.stdout.splitlines()[1] == "runs: 2"  # read back from the append-only file
    assert not process_alive(int(second.stdout.splitlines()[2]))


def test_the_command_s_exit_status_is_the_wrappers_and_a_server_is_left_alone(short_tmp):
    state = short_tmp / "state"
    assert with_redis(state, sys.executable, "-c", "raise SystemExit(3)").returncode == 3
    # With a Redis server configured there is nothing to own: the command just runs (nothing connects to it).
    served = with_redis(state / "other", sys.executable, "-c", "print('ran')", REDIS_URL="redis://127.0.0.1:1/0")
    assert (served.returncode, served.stdout) == (0, "ran\n")
    assert not (state / "other").exists()
    missing = with_redis(state, "no-such-command-here")
    assert missing.returncode == 1
    assert missing.stderr == "voicecode: cannot run no-such-command-here: No such file or directory\n"
    assert not (state / "redis.sock").exists()
    nothing = with_redis(state)
    assert (nothing.returncode, nothing.stderr) == (1, "voicecode: name the command to run\n")


def test_ctrl_c_stops_honcho_s_processes_then_the_redis(short_tmp):
    state = short_tmp / "state"
    procfile = short_tmp / "Procfile"
    procfile.write_text(f"counter: python -c \"{COUNT}; import time; time.sleep(120)\"\nsleeper: sleep 120\n")
    log = short_tmp / "run.log"
    run = subprocess.Popen([sys.executable, "-m", "cli", "with-embedded-redis", "honcho", "-f", str(procfile),
                            "start"], cwd=short_tmp, env=env_for(state), stdout=log.open("w"),
                           stderr=subprocess.STDOUT, start_new_session=True)  # its own group, as a terminal's
    try:
        wait_for(lambda: "runs: 1" in log.read_text() and "sleeper.1 started" in log.read_text(), 30,
                 what="honcho's processes")
        pid = int((state / "redis.pid").read_text())
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C does
        assert run.wait(30) == 130
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    text = log.read_text()
    assert text.count("SIGINT received") == 1  # once: the wrapper's group got it, honcho's got it from there
    assert "counter.1 stopped" in text and "sleeper.1 stopped" in text
    assert text.rstrip().endswith(f"stopping the embedded Redis (its data stays in {state})")
    assert text.index("sleeper.1 stopped") < text.index("stopping the embedded Redis")
    wait_for(lambda: not process_alive(pid), 5, what="the Redis process to end")
    leftover = subprocess.run(["pgrep", "-f", str(short_tmp)], capture_output=True, text=True).stdout
    assert leftover == ""


def test_a_sandbox_is_started_at_a_plain_http_loopback_url_only():
    assert is_loopback_http("http://127.0.0.1:8099/webservice/voice.php")
    assert is_loopback_http("http://localhost:8099/webservice/voice.php")
    assert is_loopback_http("http://[::1]:8099/webservice/voice.php")
    assert not is_loopback_http("https://127.0.0.1:8099/webservice/voice.php")
    assert not is_loopback_http("https://api.voice.ihuyi.com/webservice/voice.php")
    assert not is_loopback_http("http://10.0.0.5:8099/webservice/voice.php")
