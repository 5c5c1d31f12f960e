"""RabbitMQ with quorum queues (``RABBITMQ_QUEUE_TYPE=quorum``), each test on a vhost of its own.

The queues of a quorum stack cannot share the session's vhost, whose queues of the same names
are classic (tests/servers.py, :class:`PrivateVhost`). Skipped locally without RabbitMQ or
``rabbitmqctl``, failed under ``CI=true``, as the other RabbitMQ tests.
"""
from __future__ import annotations

import json
import tempfile
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import kombu
import pytest

from config.settings import ConfigError, load_producer_settings, load_settings
from ihuyi.sandbox import Sandbox
from tasks.producer import Producer
from tests.conftest import require_servers
from tests.servers import PrivateVhost, redis_url
from tests.support import ACCOUNTS, SANDBOX_ACCOUNTS, Backend, Stack, base_env, unique_mobile, wait_for
from tests.test_reliability import record, restart_rabbitmq, stop_and_keep_logs
from worker.broker.messages import DEAD_LETTER_QUEUE, QueueKind, all_queues

STATE_DB = 13


def test_quorum_queues_need_a_rabbitmq_broker():
    env = {"IHUYI_ACCOUNTS": json.dumps(ACCOUNTS), "RABBITMQ_QUEUE_TYPE": "quorum"}
    for url in ("redis://h:6379/0", ""):
        with pytest.raises(ConfigError) as raised:
            load_settings({**env, "CELERY_BROKER_URL": url})
        assert raised.value.variable == "RABBITMQ_QUEUE_TYPE" and "\n" not in str(raised.value)
    with pytest.raises(ConfigError, match="RABBITMQ_QUEUE_TYPE"):
        load_producer_settings({**env, "CELERY_BROKER_URL": "amqp://h//", "RABBITMQ_QUEUE_TYPE": "mirrored"})
    settings = load_settings({**env, "CELERY_BROKER_URL": "amqp://h//", "RABBITMQ_DELIVERY_LIMIT": "5"})
    assert (settings.queue_type, settings.delivery_limit) == ("quorum", 5)
    assert load_settings({**env, "RABBITMQ_QUEUE_TYPE": "", "CELERY_BROKER_URL": "amqp://h//"}).queue_type == "classic"


def test_quorum_queues_are_declared_durable_with_a_delivery_limit_on_a_topic_exchange():
    queues = all_queues(["default"], QueueKind("quorum", 7))
    assert [q.name for q in queues] == ["voicecode", "voicecode.default", "voicecode.default.due"]
    for queue in queues:
        assert queue.durable and not queue.exclusive and not queue.auto_delete
        assert queue.queue_arguments == {"x-queue-type": "quorum", "x-delivery-limit": 7,
                                         "x-dead-letter-exchange": "voicecode.dlx",
                                         "x-dead-letter-routing-key": DEAD_LETTER_QUEUE}
        assert queue.exchange.type == "topic" and queue.routing_key == queue.name
    assert all(q.queue_arguments is None and q.exchange.type == "direct" for q in all_queues(["default"]))


def test_a_retry_countdown_is_whole_seconds_and_goes_back_to_its_queue():
    """Native delayed delivery counts whole seconds (a countdown under 1 s raises) and would route
    a retry by the default queue's key: the service rounds up and names the queue it came from."""
    from celery import Celery

    from worker.broker.quorum import native_delay_options
    from worker.celeryconf import worker_conf

    def app_with(queue_type: str) -> Celery:
        app = Celery("quorum-options", set_as_current=False)
        app.conf.update(worker_conf(load_settings({
            "IHUYI_ACCOUNTS": json.dumps(ACCOUNTS), "CELERY_BROKER_URL": "amqp://h//", "REDIS_URL": "redis://h:1/0",
            "RABBITMQ_QUEUE_TYPE": queue_type})))
        return app

    delayed_key = "0." * 27 + "1.voicecode.spare"  # a delivery that came back through a delay
    options = native_delay_options(app_with("quorum"), {"countdown": 0.3, "routing_key": delayed_key})
    assert options == {"countdown": 1, "routing_key": delayed_key, "queue": "voicecode.spare"}
    assert native_delay_options(app_with("quorum"), {"countdown": 2.2, "queue": "voicecode"})["countdown"] == 3
    assert native_delay_options(app_with("classic"), {"countdown": 0.3}) == {"countdown": 0.3}


@contextmanager
def quorum_stack(sandbox: Sandbox, name: str, **env: str) -> Iterator[tuple[Stack, PrivateVhost]]:
    require_servers("rabbitmq")
    with PrivateVhost("quorum") as vhost, tempfile.TemporaryDirectory(prefix="vc-", dir="/tmp") as tmp:
        urls = {"CELERY_BROKER_URL": vhost.url, "REDIS_URL": redis_url(STATE_DB), "RABBITMQ_QUEUE_TYPE": "quorum"}
        backend = Backend(name, urls, vhost.url, redis_url(STATE_DB))
        backend.flush()
        stack = Stack(backend, base_env(sandbox.url, **urls, **env), Path(tmp))
        try:
            yield stack, vhost
        finally:
            stop_and_keep_logs(stack, name)


def submits_by_mobile(box: Sandbox) -> Counter:
    return Counter(c["mobile"] for c in box.calls("Submit"))


@pytest.mark.e2e
@pytest.mark.timeout(180)
def test_a_quorum_stack_sends_retries_and_parks():
    """Quorum queues declared by the worker, global QoS off; plain sends, sends that fail twice
    (two retries, delayed natively by RabbitMQ) and sends parked by an account's rate limit all
    reach ihuyi once each."""
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=20, initial_balance=100000) as box:
        with quorum_stack(box, "quorum-sends") as (stack, vhost):
            worker = stack.start_worker(concurrency=8)
            producer = Producer(load_producer_settings(stack.env))
            plain = [unique_mobile("138") for _ in range(20)]
            flaky = [unique_mobile("1990102") for _ in range(5)]  # reply code 0 twice, then sent
            limited = [unique_mobile("139") for _ in range(25)]  # "slow": 10/s, burst 2
            handles = [producer.enqueue(m, "730518", ttl=120) for m in plain + flaky]
            handles += [producer.enqueue(m, "730518", account="slow", ttl=120) for m in limited]
            statuses = Counter(h.get(timeout=60)["status"] for h in handles)
            assert statuses == {"submitted": len(handles)}, statuses
            calls = submits_by_mobile(box)
            assert all(calls[m] == 1 for m in plain + limited) and all(calls[m] == 3 for m in flaky)
            declared = vhost.queues()
            for queue in ("voicecode", "voicecode.default", "voicecode.slow", "voicecode.slow.due", DEAD_LETTER_QUEUE):
                assert declared[queue]["type"] == "quorum", declared[queue]
            assert declared["voicecode.default"]["arguments"]["x-delivery-limit"] == 20
            assert any(name.startswith("celery_delayed_") for name in declared)  # native delayed delivery
            assert "Global QoS is disabled" in worker.text()


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_poison_message_is_dead_lettered_at_the_delivery_limit():
    """A message that keeps coming back (here: rejected with requeue, as when a worker dies on
    it) is delivered RABBITMQ_DELIVERY_LIMIT + 1 times, then moved to voicecode.dead."""
    with Sandbox(SANDBOX_ACCOUNTS, initial_balance=1000) as box:
        with quorum_stack(box, "quorum-poison", RABBITMQ_DELIVERY_LIMIT="3") as (stack, vhost):
            stack.start_worker(concurrency=2).stop()  # declares the queues and the dead-letter queue
            queue = all_queues(["default"], QueueKind("quorum", 3))[1]
            deliveries = 0
            with kombu.Connection(vhost.url) as conn:
                conn.Producer().publish({"poison": True}, exchange=queue.exchange, routing_key=queue.routing_key,
                                        declare=[queue], delivery_mode=2)
                with conn.SimpleQueue(queue) as simple:
                    while True:
                        try:
                            message = simple.get(timeout=2)
                        except simple.Empty:
                            break
                        deliveries += 1
                        message.requeue()
            dead = wait_for(lambda: vhost.queues()[DEAD_LETTER_QUEUE]["messages"], 10, 0.2, "the dead-lettered message")
            record("quorum_poison_message", delivery_limit=3, deliveries=deliveries, dead_lettered=dead)
            assert deliveries == 4 and dead == 1
            assert vhost.queues()["voicecode.default"]["messages"] == 0


@pytest.mark.slow
@pytest.mark.e2e
@pytest.mark.timeout(240)
def test_quorum_queues_node_restart_mid_run_loses_nothing():
    """RabbitMQ's node stopped and started mid-run with 200 sends on quorum queues: 0 lost."""
    with Sandbox(SANDBOX_ACCOUNTS, latency_ms=200, initial_balance=100000) as box:
        with quorum_stack(box, "quorum-restart") as (stack, vhost):
            worker = stack.start_worker(concurrency=10)
            producer = Producer(load_producer_settings(stack.env))
            mobiles = [unique_mobile("138") for _ in range(200)]
            handles = [producer.enqueue(m, "864209", ttl=120) for m in mobiles]
            wait_for(lambda: len(box.calls("Submit")) >= 40, 30, 0.05, "the run under way")
            outage = restart_rabbitmq()
            later = [unique_mobile("138") for _ in range(20)]
            handles += [Producer(load_producer_settings(stack.env)).enqueue(m, "864209", ttl=120) for m in later]
            wait_for(lambda: set(mobiles + later) <= set(submits_by_mobile(box)), 90, 0.25, "every send at ihuyi")
            counts = submits_by_mobile(box)
            dupes = sum(n - 1 for n in counts.values() if n > 1)
            lost = [m for m in mobiles + later if counts[m] == 0]
            record("quorum_rabbitmq_restart", tasks=len(mobiles) + len(later), broker_down_s=round(outage, 1),
                   lost=len(lost), duplicate_submits=dupes)
            assert not lost and dupes == 0
            assert worker.process.poll() is None
