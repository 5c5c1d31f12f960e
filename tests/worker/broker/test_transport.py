"""The Redis transport's take: a message leaves its queue and enters ``unacked`` in one step,
recorded as its taker's; a worker whose heartbeat is gone has its messages put back at once."""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.asynchronous import Hub

from tests.servers import redis_url
from tests.support import unique_mobile, wait_for
from tests.worker.broker.conftest import DB
from worker.broker.heartbeat import OwnerKeys
from worker.stores import scripts
from worker.broker.transport import IDLE_AFTER_SECONDS, IDLE_POLL_SECONDS, POLL_SECONDS, Transport
from worker.broker.wake import ListWaiter
from worker.stores.heartbeats import Heartbeat

QUEUES = [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in ("vc-a", "vc-b")]
KEYS = OwnerKeys.of("unacked")


@pytest.fixture
def worker(redis_db) -> Iterator[Callable[[], Connection]]:
    """Makes connections that each stand for a worker process: a heartbeat of its own."""
    opened: list[tuple[Connection, Heartbeat]] = []

    def make() -> Connection:
        conn = Connection(redis_url(DB), transport=Transport,
                          transport_options={"visibility_timeout": 1})
        conn.transport.heartbeat = Heartbeat()
        opened.append((conn, conn.transport.heartbeat))
        return conn

    yield make
    for conn, heartbeat in opened:
        heartbeat.stop()
        conn.release()


@pytest.fixture
def connection(worker) -> Connection:
    return worker()


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


@pytest.fixture(params=["LMPOP", "RPOP"])
def pops(request, monkeypatch) -> str:
    """The take as Redis 7 runs it (a queue's share in one LMPOP), and as an older Redis does
    (one RPOP a message): the script's text with the server's version hidden."""
    if request.param == "RPOP":
        register = scripts.register

        def register_take_as_before_7(client, name, *directory):
            if name != "take":
                return register(client, name, *directory)
            text = scripts.source(name, *directory).replace("redis.REDIS_VERSION_NUM", "nil")
            return client.register_script(text)

        monkeypatch.setattr(scripts, "register", register_take_as_before_7)
    return request.param


def pop_calls(redis_db: redis.Redis) -> int:
    """The pops the server has run so far (LMPOP and RPOP): only a take pops in these tests."""
    stats = redis_db.info("commandstats")
    return sum(stats.get(f"cmdstat_{command}", {}).get("calls", 0) for command in ("lmpop", "rpop"))


def test_taken_messages_are_recorded_as_unacked_before_delivery(connection, redis_db, pops):
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


def test_a_take_shares_what_it_wants_among_the_queues_with_messages(connection, redis_db, pops):
    """An empty queue leaves its share to the others: on Redis 7 fewer pops than messages."""
    publish(connection, QUEUES[0], 6)
    seen = []
    channel = consume(connection, lambda body, message: seen.append(body))
    before = pop_calls(redis_db)
    assert channel.take(4) == 4
    assert [body["n"] for body in seen] == [0, 1, 2, 3] and redis_db.llen("vc-a") == 2
    assert redis_db.hlen("unacked") == 4 and redis_db.scard(KEYS.owned(channel.heartbeat.identity)) == 4
    if pops == "LMPOP":  # a share of 2 from each queue, the empty one's next round: 3 at most
        assert pop_calls(redis_db) - before <= 3


def test_the_higher_priority_list_is_taken_first(connection, redis_db, pops):
    queue = QUEUES[0]
    with connection.Producer() as producer:
        for n, priority in ((0, 9), (1, 0), (2, 9)):
            producer.publish({"n": n}, exchange=queue.exchange, routing_key=queue.routing_key, declare=[queue],
                             priority=priority)
    seen = []
    channel = consume(connection, lambda body, message: seen.append(body["n"]))
    assert channel.take(3) == 3
    first = channel._q_for_pri(queue.name, 0)
    assert seen == ([1, 0, 2] if first == queue.name else [0, 2, 1])


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
    with Connection(redis_url(DB), transport=Transport,
                    transport_options={"global_keyprefix": "x:"}) as conn:
        with pytest.raises(ValueError, match="global_keyprefix"):
            conn.default_channel


def test_empty_queues_are_looked_at_again_only_after_a_pause(connection, redis_db):
    seen = []
    channel = consume(connection, lambda body, message: seen.append(body))
    channel.take_if_due()
    assert channel.next_take > time.monotonic()  # found empty: not again on the next loop turn
    channel.next_take = time.monotonic() + 60  # the pause, held still: publishing may take longer than it
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


def on_event_loop(connection: Connection) -> Hub:
    """``connection``'s transport on an event loop of its own, as in a worker."""
    hub = Hub()
    connection.transport.register_with_event_loop(connection.connection, hub)
    return hub


def waits(redis_db: redis.Redis) -> list[str]:
    """The clients of the test database blocked in BLMOVE."""
    return [c["cmd"] for c in redis_db.client_list() if c["cmd"] == "blmove" and c["db"] == str(DB)]


def test_an_idle_worker_waits_on_each_queue_and_takes_the_moment_a_message_lands(connection, redis_db):
    seen = []
    channel = consume(connection, lambda body, message: seen.append(body))
    hub = on_event_loop(connection)
    channel.take_if_due()  # found empty: a wait goes out on each queue's list
    wait_for(lambda: len(waits(redis_db)) == len(QUEUES), 2, what="a blocked wait per queue")
    assert not channel.idle(time.monotonic())
    assert connection.transport.cycle.wake_interval() == IDLE_POLL_SECONDS  # the waits stand in for polling
    assert hub.poller.poll(0.1) == []  # nothing has landed: nothing to read
    channel.next_take = time.monotonic() + 60  # no poll would look before a minute
    publish(connection, QUEUES[1], 1)
    events = wait_for(lambda: hub.poller.poll(0.5), 5, what="the wait to answer")
    raw = redis_db.lrange("vc-b", 0, -1)
    assert len(raw) == 1 and redis_db.hlen("unacked") == 0  # the wait took nothing
    for fileno, _ in events:
        connection.transport.on_readable(fileno)
    assert [body["n"] for body in seen] == [0]  # taken at once, not after the minute
    assert redis_db.llen("vc-b") == 0 and redis_db.hlen("unacked") == 1


def test_a_busy_worker_sends_no_wait(connection, redis_db):
    publish(connection, QUEUES[0], 3)
    channel = consume(connection, lambda body, message: None)
    on_event_loop(connection)
    channel.take_if_due()
    assert waits(redis_db) == []


def test_a_closed_channel_leaves_no_wait_behind(connection, redis_db):
    channel = consume(connection, lambda body, message: None)
    on_event_loop(connection)
    channel.take_if_due()
    wait_for(lambda: len(waits(redis_db)) == len(QUEUES), 2, what="a blocked wait per queue")
    channel.close()
    wait_for(lambda: waits(redis_db) == [], 2, what="the waits to end with the channel")


def test_workers_take_with_the_script_on_every_redis_broker(stack):
    """redis:// and the embedded redis+socket:// broker alike (kombu ignores Celery's broker_transport for the latter)."""
    stack.send(unique_mobile("138"), "4821").get(timeout=30)
    uses_script = "unacked-first script" in stack.workers[0].text()
    assert uses_script == (stack.backend.name != "rabbitmq")


# -- owners and heartbeats --------------------------------------------------------------------


def hold(connection: Connection, count: int) -> list[str]:
    """Take ``count`` messages of queue vc-a and leave them unacked: a worker that holds them."""
    held: list[str] = []
    channel = consume(connection, lambda body, message: held.append(message.delivery_tag))
    channel.take(count)
    assert len(held) == count
    return held


def queued_tags(redis_db: redis.Redis, queue: str = "vc-a") -> list[str]:
    return [json.loads(raw)["properties"]["delivery_tag"] for raw in redis_db.lrange(queue, 0, -1)]


def test_the_take_records_each_message_as_its_takers_until_acked(connection, redis_db):
    publish(connection, QUEUES[0], 2)
    seen = []
    consume(connection, lambda body, message: seen.append(message)).take(2)
    me = connection.transport.heartbeat.identity
    assert {redis_db.hget(KEYS.owner_of, m.delivery_tag) for m in seen} == {me.encode()}
    assert redis_db.smembers(KEYS.owned(me)) == {m.delivery_tag.encode() for m in seen}
    assert redis_db.smembers(KEYS.owners) == {me.encode()}

    seen[0].ack()
    seen[1].reject(requeue=True)
    assert redis_db.hlen(KEYS.owner_of) == 0 and redis_db.scard(KEYS.owned(me)) == 0


def test_a_worker_without_a_heartbeat_takes_nothing(connection, redis_db):
    """Back from a stall the others took for death, it takes again only once its thread beat."""
    publish(connection, QUEUES[0], 1)
    channel = consume(connection, lambda body, message: pytest.fail("nothing to deliver"))
    channel.take(0)  # the first take starts the heartbeat
    redis_db.delete(connection.transport.heartbeat.key)
    assert channel.take(1) == 0 and redis_db.llen("vc-a") == 1


def test_a_dead_workers_messages_go_back_to_their_queue_at_once(worker, redis_db):
    dead, live = worker(), worker()
    publish(dead, QUEUES[0], 3)
    held = hold(dead, 3)
    rescuer = consume(live, lambda body, message: None)
    assert rescuer.recover_dead() == 0  # alive: its messages stay its own

    dead.transport.heartbeat.stop()  # a heartbeat gone: expired or withdrawn, the same to the others
    assert rescuer.recover_dead() == 3
    assert sorted(queued_tags(redis_db)) == sorted(held)
    assert all(json.loads(raw)["properties"]["delivery_info"]["redelivered"] for raw in redis_db.lrange("vc-a", 0, -1))
    assert redis_db.hlen("unacked") == redis_db.zcard("unacked_index") == redis_db.hlen(KEYS.owner_of) == 0
    assert dead.transport.heartbeat.identity.encode() not in redis_db.smembers(KEYS.owners)
    assert rescuer.recover_dead() == 0


def test_a_message_taken_again_by_a_live_worker_stays_with_it(worker, redis_db):
    """Restored by the visibility timeout and taken by another worker: the first owner's death does not touch it."""
    first, second, rescuer = worker(), worker(), worker()
    publish(first, QUEUES[0], 1)
    [tag] = hold(first, 1)
    redis_db.zincrby("unacked_index", -10, tag)  # past the visibility timeout
    consume(first, lambda body, message: None).qos.restore_visible(interval=1)
    assert hold(second, 1) == [tag]

    first.transport.heartbeat.stop()
    assert consume(rescuer, lambda body, message: None).recover_dead() == 0
    assert redis_db.hget(KEYS.owner_of, tag) == second.transport.heartbeat.identity.encode()
    assert redis_db.hexists("unacked", tag) and redis_db.llen("vc-a") == 0


def test_each_dead_workers_message_goes_back_once_even_if_its_rescuer_dies(worker, redis_db):
    dead, rescuer, next_rescuer = worker(), worker(), worker()
    publish(dead, QUEUES[0], 3)
    held = hold(dead, 3)
    dead.transport.heartbeat.stop()
    consume(rescuer, lambda body, message: None)
    consume(next_rescuer, lambda body, message: None)

    # The rescuer claims two, then dies before putting them back; no one else may claim those two.
    claimed = rescuer.default_channel._scripts()[1].claim_dead(rescuer.transport.heartbeat.identity, limit=2)
    assert claimed.dead == [dead.transport.heartbeat.identity] and len(claimed.tags) == 2
    rescuer.transport.heartbeat.stop()
    assert next_rescuer.default_channel.recover_dead() == 3
    assert sorted(queued_tags(redis_db)) == sorted(held)
    assert redis_db.hlen("unacked") == 0 and redis_db.smembers(KEYS.owners) <= {
        next_rescuer.transport.heartbeat.identity.encode()}


def test_a_worker_without_a_heartbeat_gives_back_nothing(worker, redis_db):
    """A process back from a long stall must not count the others dead before it beats again itself."""
    dead, stalled = worker(), worker()
    publish(dead, QUEUES[0], 1)
    hold(dead, 1)
    channel = consume(stalled, lambda body, message: None)
    channel.take(0)
    dead.transport.heartbeat.stop()
    redis_db.delete(stalled.transport.heartbeat.key)
    assert channel.recover_dead() == 0 and redis_db.hlen("unacked") == 1


def test_a_redis_without_blmove_is_polled_and_warned_about_once(redis_db, caplog):
    """A Redis older than 6.2 answers BLMOVE with an error: that queue is left to polling."""
    waiter = ListWaiter("vc-a")

    class Cycle:
        _fd_to_chan: dict = {}
        _chan_to_sock: dict = {}
        eventflags = 0
        poller = type("Poller", (), {"register": lambda self, sock, flags: None})()

    class Channel:
        async_pool = redis.ConnectionPool.from_url(redis_url(DB))

    waiter.arm(Channel(), Cycle())
    # What a Redis before 6.2 answers (this one knows BLMOVE, so the answer is made up).
    waiter.connection.read_response = lambda: (_ for _ in ()).throw(redis.ResponseError("unknown command 'BLMOVE'"))
    with caplog.at_level(logging.WARNING, logger="worker.broker.wake"):
        waiter.read()
        waiter.arm(Channel(), Cycle())
    assert waiter.refused and waiter.sent_at is None
    assert caplog.text.count("refused BLMOVE") == 1
    waiter.drop()
