"""What goes on the wire, the same from every publisher: the queues, a send's message, and the
Celery settings producers share with the workers.

Queues: one per account, so one account's backlog at its rate limit never holds up another's,
and one more per account, ``voicecode.<account>.due``, for its parked tasks that come due
(worker/stores/parking.py): a parked task comes back shortly before its rate-limit slot, and on
the account's own queue it would wait behind whatever is queued there, a backlog queued at once
for instance, and miss its slot. ``voicecode`` (the default queue) takes tasks from producers
that name no queue. Every worker consumes all of them, and with ``-Q`` the due queue of each
account whose queue it consumes. Kombu serves a worker's queues round-robin.

On RabbitMQ the queues are classic, or quorum (``RABBITMQ_QUEUE_TYPE=quorum``): replicated,
with a delivery limit (``RABBITMQ_DELIVERY_LIMIT``) past which a message that keeps coming back
(a worker dying on it, over and over) is dead-lettered to ``voicecode.dead``, and bound to a
topic exchange, ``voicecode.topic``, so that Celery's native delayed delivery can bring retry
countdowns back to them (worker/broker/quorum.py). Producers and workers must agree on it: a
queue declared as one type cannot be declared as the other.

A send's message is ``send_voice_code(mobile, code, account=…, request_id=…, ttl=…)`` on its
account's queue, stamped with its enqueue time (``enqueued_at``), its arguments masked for
Flower and the logs (``argsrepr``/``kwargsrepr``): the producer API, ``send_voice_code.delay``
and the parking lot's re-publish all build it here.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kombu import Exchange, Queue

from config.redis_urls import is_redis_broker, is_sentinel
from worker.sending.masking import masked_call
from worker.sending.request import VoiceCodeRequest

DEFAULT_QUEUE = "voicecode"
TASK_NAME = "send_voice_code"
#: Quorum queues' exchange (topic, for native delayed delivery), and where they dead-letter.
QUORUM_EXCHANGE = "voicecode.topic"
DEAD_LETTER_EXCHANGE = "voicecode.dlx"
DEAD_LETTER_QUEUE = "voicecode.dead"


@dataclass(frozen=True)
class QueueKind:
    """How the service's queues are declared on RabbitMQ (RABBITMQ_QUEUE_TYPE, RABBITMQ_DELIVERY_LIMIT)."""

    type: str = "classic"
    delivery_limit: int = 20

    @property
    def quorum(self) -> bool:
        return self.type == "quorum"


CLASSIC = QueueKind()


def queue_for(account: str) -> str:
    return f"{DEFAULT_QUEUE}.{account}"


def due_queue_for(account: str) -> str:
    """The queue of ``account``'s parked tasks that came due."""
    return f"{queue_for(account)}.due"


def all_queues(accounts: Iterable[str], kind: QueueKind = CLASSIC) -> list[Queue]:
    """Each queue bound to Celery's default exchange (``voicecode``) under its own routing key.

    A bare ``Queue(name)`` is given Celery's default routing key, ``voicecode``, so every queue
    was bound under the same key and each message was copied into all of them.
    """
    accounts = list(accounts)
    names = (DEFAULT_QUEUE, *(queue_for(a) for a in accounts), *(due_queue_for(a) for a in accounts))
    return [_queue(name, kind) for name in names]


def _queue(name: str, kind: QueueKind = CLASSIC) -> Queue:
    if not kind.quorum:
        return Queue(name, Exchange(DEFAULT_QUEUE), routing_key=name)
    return Queue(name, Exchange(QUORUM_EXCHANGE, type="topic"), routing_key=name, durable=True,
                 queue_arguments={"x-queue-type": "quorum", "x-delivery-limit": kind.delivery_limit,
                                  "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
                                  "x-dead-letter-routing-key": DEAD_LETTER_QUEUE})


def dead_letter_queue() -> Queue:
    """Where quorum queues put a message past its delivery limit: kept, never consumed by a worker."""
    return Queue(DEAD_LETTER_QUEUE, Exchange(DEAD_LETTER_EXCHANGE, type="direct"), routing_key=DEAD_LETTER_QUEUE,
                 durable=True, queue_arguments={"x-queue-type": "quorum"})


def send_options(req: VoiceCodeRequest, task_id: str, enqueued_at: float | None = None,
                 kind: QueueKind = CLASSIC) -> dict[str, Any]:
    """The keyword arguments of ``send_task``/``apply_async`` that publish ``req`` as ``task_id``.

    ``enqueued_at`` is when it was first enqueued (now, unless it is a re-publish)."""
    args = (req.mobile, req.code)
    kwargs: dict[str, Any] = {"account": req.account, "request_id": req.request_id, "ttl": req.ttl}
    argsrepr, kwargsrepr = masked_call(args, kwargs)
    return {"args": args, "kwargs": kwargs, "task_id": task_id, "queue": _queue(queue_for(req.account), kind),
            "headers": {"enqueued_at": time.time() if enqueued_at is None else enqueued_at},
            "argsrepr": argsrepr, "kwargsrepr": kwargsrepr}


def parked_message(req: VoiceCodeRequest, task_id: str, enqueued_at: float | None) -> dict[str, Any]:
    """What the parking lot keeps of ``req``, parked as ``task_id``: re-published as it is, on its
    account's due queue, when it comes due."""
    message = send_options(req, task_id, enqueued_at)
    return {"task_id": task_id, "args": list(message["args"]), "kwargs": message["kwargs"],
            "headers": message["headers"], "queue": due_queue_for(req.account)}


def shared_conf(broker_url: str, result_backend: str, sentinel_master: str | None = None,
                wait_replicas: int = 0) -> dict[str, Any]:
    """The Celery settings of every process on this broker, producers and workers alike.

    A ``sentinel://`` broker or result store gets the master name as kombu's and Celery's
    ``master_name`` transport option; ``wait_replicas`` is read by worker/broker/transport.py,
    which then waits, after each publish, for that many replicas to hold it.
    """
    redis_broker = is_redis_broker(broker_url)
    broker_options: dict[str, Any] = {} if redis_broker else {"confirm_publish": True}
    backend_options: dict[str, Any] = {"retry_policy": {"timeout": 5.0}}
    if is_sentinel(broker_url):
        broker_options["master_name"] = sentinel_master
    if is_sentinel(result_backend):
        backend_options["master_name"] = sentinel_master
    if redis_broker and wait_replicas:
        broker_options["wait_replicas"] = wait_replicas
    return {
        "broker_url": broker_url,
        "result_backend": result_backend,
        # Only JSON on the wire: no pickle from foreign producers.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        # RabbitMQ confirms each publish: a message is not lost between the publisher and the broker.
        "broker_transport_options": broker_options,
        # No AMQP heartbeats. A publishing connection reads no frames between publishes and would
        # be closed by RabbitMQ; in a worker, Celery's main loop would read the connection task
        # events go out on while each pool thread reads it for its publisher confirm, and the two
        # take each other's frames. py-amqp's TCP keepalive (60 s idle, then 9 probes 10 s apart)
        # notices a dead broker.
        "broker_heartbeat": 0,
        "broker_connection_retry_on_startup": True,
        "result_backend_transport_options": backend_options,
        # Queues named for the product, so it can share a broker with other apps.
        "task_default_queue": DEFAULT_QUEUE,
        # Flower sees a task the moment it is enqueued, with masked arguments.
        "task_send_sent_event": True,
    }
