"""Sentry set-up and scrubbing: the hooks as functions, and the real SDK transport on the wire."""
from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import textwrap
import time

import pytest
import sentry_sdk

from config import load_settings
from ihuyi.sandbox import Sandbox
from tests.sentry_receiver import PROJECT, PUBLIC_KEY, SentryReceiver
from tests.stacks import redis_stack
from tests.support import ACCOUNTS, APIKEY, ROOT, SANDBOX_ACCOUNTS, SECRETS, unique_mobile, wait_for
from worker.ops.sentry import _ID, _MOBILE, FILTERED, Scrubber, balance_monitor_config, init_sentry

MOBILE = "13800138000"
CODE = "864209"


def settings(**env: str):
    return load_settings({"IHUYI_ACCOUNTS": json.dumps(ACCOUNTS), **env})


@pytest.fixture
def scrubber() -> Scrubber:
    return Scrubber(SECRETS)


def test_scrubber_masks_mobiles_and_removes_apikeys_in_any_string(scrubber):
    assert scrubber.text(f"call {MOBILE} with password={APIKEY}") == f"call 138****8000 with password={FILTERED}"
    assert scrubber.text("+8613800138000, 86 13912345678") == "138****8000, 139****5678"
    assert scrubber.text("login:13800138000:7") == "login:138****8000:7"
    assert scrubber.text(MOBILE) == "138****8000"  # the shortest string that can hold one
    assert scrubber.text(APIKEY) == FILTERED and scrubber.text(APIKEY[:12] + "x") == APIKEY[:12] + "x"


def test_scrubber_leaves_ids_numbers_and_longer_digit_runs_alone(scrubber):
    for text in ("a13800138000b13800138000c9d8e7f6", "1713800138000", "e3b0c442-98fc-1c14-9afb-913800138000",
                 "60495654", "4051", "1712345678.918273"):
        assert scrubber.text(text) == text


def test_scrubber_masks_every_number_its_pattern_finds(scrubber):
    """The quick search for a number's digits never skips a string the full pattern would mask."""
    rng = random.Random(7)

    def piece() -> str:
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 14)))
        mobile = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
        return rng.choice([digits, mobile, "86" + mobile, "+86" + mobile, "86 " + mobile, "+86-" + mobile, "ab"])

    for _ in range(20000):
        text = "".join(piece() + rng.choice(["", "", " ", ":", "x"]) for _ in range(rng.randint(1, 4)))
        assert scrubber.text(text) == (text if _ID.fullmatch(text) else _MOBILE.sub(r"\1****\2", text))


def test_scrubber_filters_an_apikey_that_looks_like_an_id():
    hex_key = "0123456789abcdef0123456789abcdef"  # as long as a trace id, and as hex
    assert Scrubber([hex_key]).text(hex_key) == FILTERED
    assert Scrubber([hex_key]).text(f"key={hex_key}") == f"key={FILTERED}"


def test_scrubber_drops_task_arguments_everywhere(scrubber):
    event = {
        "extra": {"celery-job": {"task_name": "send_voice_code", "args": [MOBILE, CODE], "kwargs": {"code": CODE}}},
        "spans": [{"data": {"argsrepr": f"('{MOBILE}', '{CODE}')", "kwargsrepr": "{}", "url": "http://x"}}],
        "breadcrumbs": {"values": [{"message": f"sent to {MOBILE}", "data": {"args": (MOBILE, CODE)}}]},
        "tags": {"account": "default", "note": APIKEY},
    }
    assert scrubber.event(event, {}) == {
        "extra": {"celery-job": {"task_name": "send_voice_code"}},
        "spans": [{"data": {"url": "http://x"}}],
        "breadcrumbs": {"values": [{"message": "sent to 138****8000", "data": {}}]},
        "tags": {"account": "default", "note": FILTERED},
    }


def test_balance_monitor_schedule_is_whole_minutes():
    assert balance_monitor_config(settings(BALANCE_CHECK_SECONDS="1"))["schedule"] == {
        "type": "interval", "value": 1, "unit": "minute"}
    assert balance_monitor_config(settings(BALANCE_CHECK_SECONDS="300"))["schedule"]["value"] == 5
    assert balance_monitor_config(settings(BALANCE_CHECK_SECONDS="301"))["schedule"]["value"] == 6


def test_without_dsn_nothing_is_initialised():
    assert init_sentry(settings(), "worker") is False
    assert not sentry_sdk.get_client().is_active()


# Leaks an APIKEY, a mobile number and a code through every channel the SDK has.
LEAKY = textwrap.dedent(f"""
    import logging, sentry_sdk
    from config import get_settings
    from worker.ops.sentry import init_sentry

    assert init_sentry(get_settings(), "test")
    log = logging.getLogger("leaky")
    log.info("breadcrumb: calling %s with %s", "{MOBILE}", "{APIKEY}")
    with sentry_sdk.start_transaction(name="leaky", op="test"):
        sentry_sdk.set_extra("celery-job", {{"args": ["{MOBILE}", "{CODE}"], "kwargs": {{"code": "{CODE}"}}}})
        with sentry_sdk.start_span(op="http.client", name="POST /voice.php?mobile={MOBILE}") as span:
            span.set_data("args", ["{MOBILE}", "{CODE}"])
            span.set_data("password", "{APIKEY}")
        log.warning("sentry log from logging: %s %s", "{MOBILE}", "{APIKEY}")
        sentry_sdk.logger.info("sentry log: {{mobile}}", mobile="{MOBILE}", attributes={{"key": "{APIKEY}"}})
        log.error("an error about %s with %s", "{MOBILE}", "{APIKEY}")
        try:
            raise RuntimeError("{MOBILE} {APIKEY}")
        except RuntimeError:
            sentry_sdk.capture_exception()
    sentry_sdk.flush(10)
""")


def run_with_sentry(script: str, receiver: SentryReceiver, sample_rate: str = "1.0") -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter whose settings point Sentry at ``receiver``, every trace sampled."""
    env = {"IHUYI_ACCOUNTS": json.dumps(ACCOUNTS), "SENTRY_DSN": receiver.dsn, "SENTRY_ENVIRONMENT": "ci",
           "SENTRY_TRACES_SAMPLE_RATE": sample_rate, "VOICECODE_ENV_FILE": "/dev/null", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def test_every_channel_is_scrubbed_on_the_wire():
    with SentryReceiver() as receiver:
        done = run_with_sentry(LEAKY, receiver)
        wait_for(lambda: len(receiver.events()) >= 2 and receiver.transactions() and len(receiver.logs()) >= 2,
                 10, what="events, a transaction and logs")
        wire = b"".join(receiver.bodies)

    assert b"138****8000" in wire  # the data was there, masked
    assert MOBILE.encode() not in wire and CODE.encode() not in wire
    assert not [s for s in SECRETS if s.encode() in wire]
    transaction = receiver.transactions()[0]
    assert transaction["release"] == "voicecode@0.1.0" and transaction["environment"] == "ci"
    assert transaction["tags"]["process"] == "test"
    assert [s["description"] for s in transaction["spans"]] == ["POST /voice.php?mobile=138****8000"]
    assert "args" not in transaction["spans"][0].get("data", {})
    error = next(e for e in receiver.events() if e.get("exception"))
    assert error["exception"]["values"][0]["value"] == f"138****8000 {FILTERED}"
    assert all("vars" not in frame for frame in error["exception"]["values"][0]["stacktrace"]["frames"])


# Task runs through Celery's own tracer, as a worker runs them, with Sentry started as in a worker;
# prints each run's task id.
WORKER_RUNS = textwrap.dedent(f"""
    import json, time, uuid
    import sentry_sdk
    from celery import Celery
    from celery.app.trace import build_tracer
    from config import get_settings
    from worker.ops.sentry import init_sentry

    assert init_sentry(get_settings(), "worker")
    app = Celery("runs", broker="memory://")
    app.conf.task_ignore_result = True

    @app.task(name="tagged")
    def tagged():
        sentry_sdk.set_tag("outcome", "submitted")

    @app.task(name="plain")
    def plain():
        pass

    @app.task(name="fails")
    def fails():
        raise RuntimeError("refused {MOBILE} {APIKEY}")

    @app.task(name="probe_paused_accounts")
    def probe():
        pass

    def run(task, headers=None):
        task_id = str(uuid.uuid4())
        build_tracer(task.name, task, app=app, eager=False, propagate=False)(
            task_id, [], {{}}, {{"id": task_id, "headers": headers or {{}}}})
        return task_id

    beat_headers = {{"sentry-monitor-slug": "probe-paused-accounts", "sentry-monitor-check-in-id": "c" * 32,
                    "sentry-monitor-start-timestamp-s": "%.9f" % time.time(),
                    "sentry-monitor-config": {{"schedule": {{"type": "interval", "value": 1, "unit": "minute"}}}}}}
    ids = {{"tagged": run(tagged), "plain": run(plain), "fails": run(fails), "probe": run(probe, beat_headers)}}
    sentry_sdk.flush(10)
    print(json.dumps(ids))
""")


def test_a_worker_sends_a_transaction_per_sampled_run_and_an_error_per_failed_one():
    with SentryReceiver() as receiver:
        ids = json.loads(run_with_sentry(WORKER_RUNS, receiver).stdout)
        wait_for(lambda: len(receiver.transactions()) >= 4 and receiver.events() and receiver.check_ins(), 10,
                 what="4 transactions, an error and a check-in")
        wire = b"".join(receiver.bodies)

    runs = {t["tags"]["celery_task_id"]: t for t in receiver.transactions()}
    assert {runs[ids[name]]["transaction"] for name in ids} == {"tagged", "plain", "fails", "probe_paused_accounts"}
    assert {t["contexts"]["trace"]["op"] for t in runs.values()} == {"queue.task.celery"}
    assert runs[ids["tagged"]]["tags"]["outcome"] == "submitted"
    assert "outcome" not in runs[ids["plain"]]["tags"]  # nothing of the run before on the same thread
    assert runs[ids["plain"]]["contexts"]["trace"]["status"] == "ok"
    assert runs[ids["fails"]]["contexts"]["trace"]["status"] == "internal_error"
    assert len({t["contexts"]["trace"]["trace_id"] for t in runs.values()}) == 4
    [error] = receiver.events()  # once: Celery's own line about the failure is no second event
    assert error["tags"]["celery_task_id"] == ids["fails"]
    assert error["exception"]["values"][0]["value"] == f"refused 138****8000 {FILTERED}"
    [check_in] = receiver.check_ins()
    assert (check_in["monitor_slug"], check_in["status"], check_in["check_in_id"]) == (
        "probe-paused-accounts", "ok", "c" * 32)
    assert MOBILE.encode() not in wire and APIKEY.encode() not in wire


def test_a_worker_builds_no_transaction_for_an_unsampled_run():
    with SentryReceiver() as receiver:
        ids = json.loads(run_with_sentry(WORKER_RUNS, receiver, sample_rate="0").stdout)
        wait_for(lambda: receiver.events() and receiver.check_ins(), 10, what="an error and a check-in")

    assert not receiver.transactions()
    [error] = receiver.events()
    assert error["tags"]["celery_task_id"] == ids["fails"]


# An HTTP request made inside a sampled transaction, as the ihuyi client makes them; prints its headers.
OUTGOING = textwrap.dedent("""
    import http.server, json, threading
    import requests, sentry_sdk
    from config import get_settings
    from worker.ops.sentry import init_sentry

    seen = []
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(dict(self.headers))
            self.send_response(204)
            self.end_headers()
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    assert init_sentry(get_settings(), "test")
    with sentry_sdk.start_transaction(name="outgoing", op="test"):
        requests.post(f"http://127.0.0.1:{server.server_port}/webservice/voice.php", timeout=5)
    print(json.dumps(seen))
""")


def test_no_trace_headers_go_to_ihuyi():
    with SentryReceiver() as receiver:
        done = run_with_sentry(OUTGOING, receiver)
    [headers] = json.loads(done.stdout)
    assert "sentry-trace" not in {name.lower() for name in headers}
    assert "baggage" not in {name.lower() for name in headers}


@pytest.mark.e2e
def test_a_hanging_sentry_does_not_hold_up_sending(sandbox):
    with socket.create_server(("127.0.0.1", 0), backlog=64) as black_hole:  # connects, never answers
        dsn = f"http://{PUBLIC_KEY}@127.0.0.1:{black_hole.getsockname()[1]}/{PROJECT}"
        with redis_stack(sandbox, SENTRY_DSN=dsn) as stack:
            worker = stack.start_worker(concurrency=4)
            started = time.monotonic()
            pending = [stack.send(unique_mobile("138"), "4821") for _ in range(20)]
            assert {r.get(timeout=30)["status"] for r in pending} == {"submitted"}
            assert time.monotonic() - started < 5
            started = time.monotonic()
            worker.stop()
            assert time.monotonic() - started < 10  # the SDK waits at most shutdown_timeout (2 s) at exit


@pytest.mark.e2e
def test_a_busy_worker_loses_no_outcome_line_to_a_sentry_far_away():
    """The SDK sends envelopes one at a time from one thread, and drops what overflows its queue:
    a transaction per sampled run must leave room for the outcome lines' batches."""
    sends = 3000
    with Sandbox(SANDBOX_ACCOUNTS, initial_balance=10**8) as sandbox, SentryReceiver(reply_delay=0.1) as receiver, \
            redis_stack(sandbox, SENTRY_DSN=receiver.dsn) as stack:
        for _ in range(sends):  # queued first, so that the worker sends flat out
            stack.send(unique_mobile("138"), "4821")
        stack.start_worker(concurrency=32)
        wait_for(lambda: len(sandbox.calls("Submit")) >= sends, 120, what="every Submit")
        wait_for(lambda: len(receiver.outcome_logs()) >= sends, 30, what=f"{sends} outcome lines")
        assert not [r for r in receiver.items("client_report") if r.get("discarded_events")]
