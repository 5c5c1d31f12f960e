"""Queues: one per account, so one account's backlog at its rate limit never holds up another's.

``voicecode`` (the default queue) takes tasks from producers that name no queue; every
worker consumes all of them. Kombu serves a worker's queues round-robin.
"""
from __future__ import annotations

from collections.abc import Iterable

from kombu import Queue

DEFAULT_QUEUE = "voicecode"


def queue_for(account: str) -> str:
    return f"{DEFAULT_QUEUE}.{account}"


def all_queues(accounts: Iterable[str]) -> list[Queue]:
    """Each queue bound to Celery's default exchange (``voicecode``) under its own routing key.

    A bare ``Queue(name)`` is given Celery's default routing key, ``voicecode``, so every queue
    was bound under the same key and each message was copied into all of them.
    """
    return [Queue(name, routing_key=name) for name in (DEFAULT_QUEUE, *(queue_for(a) for a in accounts))]
