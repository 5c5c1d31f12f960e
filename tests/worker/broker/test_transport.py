"""The Redis transport's take: a message leaves its queue and enters ``unacked`` in one step."""
from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from kombu import Connection, Exchange, Queue

from tests.support import unique_mobile
from tests.worker.conftest import TEST_DB
from worker.broker.transport import IDLE_AFTER_SECONDS, IDLE_POLL_SECONDS, POLL_SECONDS, Transport

QUEUES = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in ("vc-a", "vc-b")]


@pytest.fixture
def connection(redis_db):
    with Connection(f"redis://127.0.0.1:6379/{TEST_DB}", transport=Transport,
                    transport_options={"visibility_timeout": 1}) as conn:
        yield conn


def publish(connection: Connection, queue: Queue, count: int) -> None:
    with connection.Producer() as producer:
        for i in range(count):
            producer.publish({"n": i, "queue": queue.name}, exchange=queue.exchange,
                             routing_key=queue.routing_key, declare=[queue])


def consume(connection: Connection, callback) -> Any:
    """The connection's channel, consuming ``QUEUES`` into ``callback``."""
    channel = connection.default_channel
    connection.Consumer(QUEUES, callbacks=[callback], channel=channel).consume()
    return channel


def test_taken_messages_are_recorded_as_unacked_before_delivery(connection, redis_db):
    for queue in QUEUES:
        publish(connection, queue, 3)
    seen = []

    def on_message(body, message):
        # At delivery the message is already off the queue and in the unacked hash.
        entry = json.loads(redis_db.hget("unacked", message.delivery_tag))
        assert entry[0]["properties"]["delivery_tag"] == message.delivery_tag
        assert entry[1:] == [body["queue"], body["queue"]]
        assert redis_db.zscore("unacked_index", message.delivery_tag) is not None
        seen.append(message)

    channel = consume(connection, on_message)
    assert channel.take(4) == 4
    assert sorted(m.payload["queue"] for m in seen) == ["vc-a", "vc-a", "vc-b", "vc-b"]  # fair across queues
    assert [m.payload["n"] for m in seen if m.payload["queue"] == "vc-a"] == [0, 1]  # in order
    assert redis_db.llen("vc-a") == redis_db.llen("vc-b") == 1

    for message in seen:
        message.ack()
    assert redis_db.hlen("unacked") == 0 and redis_db.zcard("unacked_index") == 0


def test_a_worker_dying_right_after_the_take_loses_nothing(connection, redis_db):
    """The killed-worker window of stock kombu: taken, never acked. The visibility timeout brings it back."""
    publish(connection, QUEUES[0], 1)

    def die(body, message):
        raise KeyboardInterrupt

    channel = consume(connection, die)
    with pytest.raises(KeyboardInterrupt):
        channel.take(1)
    assert redis_db.llen("vc-a") == 0 and redis_db.hlen("unacked") == 1

    tag = redis_db.zrange("unacked_index", 0, 0)[0]
    redis_db.zincrby("unacked_index", -10, tag)  # past the visibility timeout
    channel.qos.restore_visible(interval=1)
    assert redis_db.llen("vc-a") == 1 and redis_db.hlen("unacked") == 0
    assert json.loads(redis_db.lindex("vc-a", 0))["properties"]["delivery_tag"] == tag.decode()


def test_an_empty_take_delivers_nothing(connection, redis_db):
    channel = consume(connection, lambda body, message: pytest.fail("nothing to deliver"))
    assert channel.take(10) == 0


def test_an_unreadable_message_is_dropped_with_a_log_line_without_its_content(connection, redis_db, caplog):
    publish(connection, QUEUES[1], 1)
    redis_db.rpush("vc-b", b'{"properties": {"delivery_tag": "bad"}, "body": "\xff 13800138000')
    seen = []
    channel = consume(connection, lambda body, message: seen.append(body))
    with caplog.at_level(logging.ERROR, logger="worker.broker.transport"):
        assert channel.take(10) == 2
    assert [body["n"] for body in seen] == [0]
    assert "unreadable message" in caplog.text and "13800138000" not in caplog.text
    assert redis_db.hlen("unacked") == 1  # only the good one, until it is acked


def test_global_keyprefix_is_refused(redis_db):
    with Connection(f"redis://127.0.0.1:6379/{TEST_DB}", transport=Transport,
                    transport_options={"global_keyprefix": "x:"}) as conn:
        with pytest.raises(ValueError, match="global_keyprefix"):
            conn.default_channel


def test_empty_queues_are_looked_at_again_only_after_a_pause(connection, redis_db):
    seen = []
    channel = consume(connection, lambda body, message: seen.append(body))
    channel.take_if_due()
    assert channel.next_take > time.monotonic()  # found empty: not again on the next loop turn
    publish(connection, QUEUES[0], 1)
    channel.take_if_due()
    assert seen == []
    channel.next_take = 0.0  # the pause is over
    channel.take_if_due()
    assert [body["n"] for body in seen] == [0]
    assert channel.next_take <= time.monotonic()  # busy: on the next turn again


def test_a_worker_slows_its_polling_once_idle(connection):
    channel = consume(connection, lambda body, message: None)
    now = time.monotonic()
    channel.last_taken = now
    assert not channel.idle(now) and connection.transport.cycle.wake_interval() == POLL_SECONDS
    channel.last_taken = now - IDLE_AFTER_SECONDS
    assert channel.idle(now) and connection.transport.cycle.wake_interval() == IDLE_POLL_SECONDS


def test_workers_take_with_the_script_on_every_redis_broker(stack):
    """redis:// and the embedded redis+socket:// broker alike (kombu ignores Celery's broker_transport for the latter)."""
    stack.send(unique_mobile("138"), "4821").get(timeout=30)
    uses_script = "unacked-first script" in stack.workers[0].text()
    assert uses_script == (stack.backend.name != "rabbitmq")
