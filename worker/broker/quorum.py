"""RabbitMQ quorum queues (``RABBITMQ_QUEUE_TYPE=quorum``): what Celery leaves to the service.

Celery 5.5+ does the rest once the worker's queues are declared as quorum
(worker/broker/messages.py): it turns global QoS off (quorum queues refuse it; the prefetch
is then fixed per consumer) and sets up native delayed delivery, so a retry's countdown waits
in RabbitMQ's ``celery_delayed_*`` queues, not in the worker's memory holding a prefetch slot.
Two things it does not:

- Native delayed delivery counts whole seconds, and a countdown under one second raises; the
  service's retries use full jitter from 0. :func:`native_delay_options` rounds a countdown
  up to whole seconds (at least 1), and sends it back to the queue it came from: Celery would
  otherwise take the routing key of the default queue.
- The dead-letter queue the quorum queues name (``voicecode.dead``) is declared by each worker
  when it connects (:class:`DeadLetterQueue`), and never consumed: a message there came back
  ``RABBITMQ_DELIVERY_LIMIT`` times (a worker died on it each time) and waits for an operator.
"""
from __future__ import annotations

import logging
import math
import re
from typing import Any

from celery import bootsteps

from worker.broker.messages import dead_letter_queue

log = logging.getLogger(__name__)

#: The delay bits native delayed delivery puts in front of a routing key (kombu: 28 of them).
_DELAY_PREFIX = re.compile(r"^(?:[01]\.){28}")


def uses_quorum(app: Any) -> bool:
    return app.conf.task_default_queue_type == "quorum"


def native_delay_options(app: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` of a publish with a countdown, made fit for native delayed delivery."""
    countdown = options.get("countdown")
    if not countdown or not uses_quorum(app):
        return options
    options["countdown"] = max(1, math.ceil(countdown))
    routing_key = options.get("routing_key")
    if "queue" not in options and routing_key:
        name = _DELAY_PREFIX.sub("", routing_key, count=1)
        if name in app.amqp.queues:  # each queue is bound under its own name
            options["queue"] = name
    return options


class DeadLetterQueue(bootsteps.StartStopStep):
    """Declares ``voicecode.dead`` (quorum, durable) on each connect, when the queues are quorum."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def include_if(self, c: Any) -> bool:
        return uses_quorum(c.app)

    def start(self, c: Any) -> None:
        try:
            dead_letter_queue()(c.connection.default_channel).declare()
        except Exception as exc:  # noqa: BLE001 - the next connect declares it again
            log.warning("declaring the dead-letter queue voicecode.dead failed (%s: %s); messages past the "
                        "delivery limit are dropped until it exists", type(exc).__name__, exc)
