"""Flower, started for real with ``voicecode flower``, watching a worker on the local Redis."""
from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from celery import Celery

from tests.stacks import redis_stack, start, stop
from tests.support import ROOT, base_env, unique_mobile, wait_for
from worker.ops.flower import NOT_SHOWN, mask_event
from worker.sending.masking import masked_call

AUTH = ("ops", "s3cret-flower")
#: A queue no worker consumes: a task sent there only ever has its task-sent event.
UNCONSUMED = "flower-test-nobody-consumes"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def flower(sandbox):
    """(stack, Flower's base URL, Flower's pid): a worker, and Flower already capturing its events.

    The port comes from the settings (FLOWER_PORT), the address from the command line.
    """
    port = free_port()
    with redis_stack(sandbox, FLOWER_BASIC_AUTH=":".join(AUTH), FLOWER_PORT=str(port)) as stack:
        stack.start_worker(concurrency=4)
        url = f"http://127.0.0.1:{port}"
        process = start(stack, "flower", "-m", "cli", "flower", "--address", "127.0.0.1")
        try:
            wait_for(lambda: _get(url) is not None, 30, 0.2, "Flower to answer")
            # Flower sees only the events sent after it subscribed: warm up until it has seen a task.
            def seen() -> bool:
                task = stack.send(unique_mobile("138"), "4821")
                return task.get(timeout=10) and wait_for_task(url, task.id, timeout=2, fail=False)
            wait_for(seen, 30, 0.1, "Flower to see a task")
            yield stack, url, process.pid
        finally:
            stop(process)


def _get(url: str) -> requests.Response | None:
    try:
        return requests.get(f"{url}/api/tasks", auth=AUTH, timeout=2)
    except requests.ConnectionError:
        return None


def wait_for_task(url: str, task_id: str, state: str = "SUCCESS", timeout: float = 30,
                  fail: bool = True) -> dict | None:
    """The task as Flower's ``/api/tasks`` lists it, once it is in ``state``."""
    def listed() -> dict | None:
        task = requests.get(f"{url}/api/tasks", auth=AUTH, timeout=5).json().get(task_id)
        return task if task and task["state"] == state else None
    try:
        return wait_for(listed, timeout, 0.1, f"task {task_id} {state} in Flower")
    except AssertionError:
        if fail:
            raise
        return None


def test_tasks_are_listed_with_masked_arguments_and_their_states(flower):
    stack, url, _ = flower
    mobile, foreign = unique_mobile("138"), unique_mobile("139")
    sent = {
        "ours": stack.send(mobile, "4821", account="default", request_id="flower-1"),
        "foreign": stack.send(foreign, "662091", foreign=True),  # by name, no argsrepr
        "retried": stack.send(unique_mobile("1990101"), "4821"),  # code 0 once, then sent
        "dead-lettered": stack.send("19900004030", "4821"),
    }
    later = stack.send(unique_mobile("138"), "4821", foreign=True, ttl=60)
    later_id = stack.client.send_task("send_voice_code", (unique_mobile("138"), "4821"), countdown=60).id

    tasks = {name: wait_for_task(url, r.id) for name, r in sent.items()}
    assert {t["name"] for t in tasks.values()} == {"send_voice_code"}
    assert tasks["ours"]["args"] == f"('{mobile[:3]}****{mobile[-4:]}', '****')"
    assert tasks["ours"]["kwargs"] == "{'account': 'default', 'request_id': 'flower-1'}"
    assert tasks["foreign"]["args"] == f"('{foreign[:3]}****{foreign[-4:]}', '****')"
    assert tasks["retried"]["retries"] == 1 and tasks["retried"]["retried"]  # the task-retried event arrived
    assert "dead_lettered" in tasks["dead-lettered"]["result"]
    assert wait_for_task(url, later.id)["kwargs"] == "{'ttl': '60'}"
    waiting = wait_for_task(url, later_id, state="RECEIVED")  # held by the worker until its ETA
    assert waiting["eta"] and waiting["args"].endswith("'****')")

    listing = requests.get(f"{url}/api/tasks", auth=AUTH, timeout=5).text
    assert mobile not in listing and foreign not in listing and "662091" not in listing


def test_a_foreign_producers_task_sent_event_is_masked(flower):
    """A bare Celery app's task-sent event carries the raw arguments; no worker ever reports this task."""
    stack, url, _ = flower
    producer = Celery("foreign-producer", broker=stack.backend.broker)
    producer.conf.update(task_send_sent_event=True, broker_connection_retry_on_startup=True)
    by_position, by_name = unique_mobile("139"), unique_mobile("139")
    sent = {
        "position": producer.send_task("send_voice_code", (by_position, "739146"), queue=UNCONSUMED).id,
        "name": producer.send_task("send_voice_code", (), {"mobile": by_name, "code": "739146", "request_id": "f-1"},
                                   queue=UNCONSUMED).id,
    }
    listed = {key: wait_for_task(url, task_id, state="PENDING") for key, task_id in sent.items()}
    info = {key: requests.get(f"{url}/api/task/info/{task_id}", auth=AUTH, timeout=5).json() for key, task_id in sent.items()}

    for shown in (listed, info):
        assert shown["position"]["args"] == f"('{by_position[:3]}****{by_position[-4:]}', '****')"
        assert shown["name"]["kwargs"] == f"{{'mobile': '{by_name[:3]}****{by_name[-4:]}', 'code': '****', 'request_id': 'f-1'}}"
    everything = requests.get(f"{url}/api/tasks", auth=AUTH, timeout=5).text + repr(info)
    assert by_position not in everything and by_name not in everything and "739146" not in everything


def test_flower_refuses_requests_without_the_password(flower):
    _, url, _ = flower
    assert requests.get(f"{url}/api/tasks", timeout=5).status_code == 401
    assert requests.get(f"{url}/api/tasks", auth=("ops", "wrong"), timeout=5).status_code == 401
    assert requests.get(f"{url}/api/tasks", auth=AUTH, timeout=5).status_code == 200


def test_flowers_own_metrics_want_the_password_too(flower):
    """Flower 2.x serves ``/metrics`` to anyone; ``voicecode flower`` puts it behind the password."""
    _, url, _ = flower
    assert requests.get(f"{url}/metrics", timeout=5).status_code == 401
    assert requests.get(f"{url}/metrics", auth=("ops", "wrong"), timeout=5).status_code == 401
    reply = requests.get(f"{url}/metrics", auth=AUTH, timeout=5)
    assert reply.status_code == 200 and "flower_events_total" in reply.text
    assert requests.get(f"{url}/healthcheck", timeout=5).text == "OK"  # says nothing else


def test_the_password_is_not_on_flowers_command_line(flower):
    """``ps`` shows every local user a process's command line; Flower gets the password from its environment."""
    _, _, pid = flower
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "flower" in cmdline and AUTH[1] not in cmdline


def test_masking_an_event_again_changes_nothing():
    args, kwargs = masked_call(("13955550001", "7391", "spare", "r-1", 60, "extra"), {"request_id": "r-2", "ttl": 60})
    event = {"type": "task-received", "uuid": "u", "args": args, "kwargs": kwargs, "hostname": "w"}
    assert mask_event(event) == event
    assert mask_event(mask_event({"args": "('13955550001', '7391')", "kwargs": "{'code': '7391'}"})) == {
        "args": "('139****0001', '****')", "kwargs": "{'code': '****'}"}


@pytest.mark.parametrize("raw", ["('13955550001', '7391'", "('13955550001', '7391', '...", "f('13955550001')",
                                 ["13955550001", "7391"], None, "(" * 1000 + ")" * 1000, "'" + "1" * 5000 + "'"])
def test_arguments_that_are_no_literal_are_not_shown(raw):
    assert mask_event({"type": "task-sent", "args": raw, "kwargs": raw}) == {
        "type": "task-sent", "args": NOT_SHOWN, "kwargs": NOT_SHOWN}


def test_flower_does_not_start_without_basic_auth(sandbox):
    done = subprocess.run([sys.executable, "-m", "cli", "flower"], cwd=ROOT, env=base_env(sandbox.url),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert done.stderr.count("\n") == 1 and "FLOWER_BASIC_AUTH" in done.stderr


def test_flower_rejects_a_malformed_basic_auth(sandbox):
    done = subprocess.run([sys.executable, "-m", "cli", "flower"], cwd=ROOT,
                          env=base_env(sandbox.url, FLOWER_BASIC_AUTH="no-password"),
                          capture_output=True, text=True, timeout=30)
    assert done.returncode != 0 and done.stderr.count("\n") == 1 and "FLOWER_BASIC_AUTH" in done.stderr
