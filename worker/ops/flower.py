"""Flower for this service: its password kept off the command line, task arguments masked.

``voicecode flower`` runs :func:`run` in its own process. Three things differ from a bare
``celery flower``:

* The credentials, port and address reach Flower through its ``FLOWER_*`` environment
  variables (flower/command.py ``apply_env_options``), not as ``--basic-auth=user:password``,
  which ``ps`` shows every local user.
* Every event's ``args`` and ``kwargs`` are masked before Flower's state sees them. The
  worker masks what it reports, but a producer that does not import this project sends a
  ``task-sent`` event with the raw arguments, which Flower showed until a worker received
  the task. Flower has no hook for incoming events (its ``format_task`` option reaches the
  HTML pages, not the API), so :class:`MaskingEvents` overrides ``Events.on_event``, the one
  handler every event passes through, and :func:`run` has ``flower.app.Flower`` build it in
  place of ``Events``. Nothing outside this process is changed.
* ``/metrics`` wants the password too. Flower 2.x serves it without asking (its handler,
  ``flower.views.monitor.Metrics``, never reads ``current_user``, which is where basic auth
  is checked): the counts of task events by worker and task name, worker states and task
  runtimes. :class:`AuthenticatedMetrics` takes its place in Flower's URL table.
  ``/healthcheck`` stays open: it says ``OK`` and nothing else.
"""
from __future__ import annotations

import ast
import os
from collections.abc import Callable, Mapping
from typing import Any, NoReturn

from flower import app as flower_app
from flower import urls as flower_urls
from flower.events import Events
from flower.views.monitor import Metrics
from tornado import web

from worker.sending.masking import masked_call

#: What Flower shows for arguments that are not a Python literal: nothing of them.
NOT_SHOWN = "<not shown>"
# Celery cuts argsrepr and kwargsrepr at 1,024 characters: a longer one is not Celery's,
# and is not worth parsing.
_MAX_REPR = 4096
_UNPARSEABLE = (ValueError, TypeError, SyntaxError, MemoryError, RecursionError)


def mask_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """``event`` with its ``args`` and ``kwargs`` reprs masked as :func:`masked_call` masks a call.

    Already-masked reprs come out unchanged, so events from our own producer and workers
    read as before.
    """
    masked = dict(event)
    if "args" in event:
        masked["args"] = _remasked(event["args"], lambda args: masked_call(args, {})[0])
    if "kwargs" in event:
        masked["kwargs"] = _remasked(event["kwargs"], lambda kwargs: masked_call((), kwargs)[1])
    return masked


def _remasked(text: object, mask: Callable[[Any], str]) -> str:
    """``mask`` of the value ``text`` is the repr of; :data:`NOT_SHOWN` when ``text`` is no Python literal."""
    if not isinstance(text, str) or len(text) > _MAX_REPR:
        return NOT_SHOWN
    try:
        return mask(ast.literal_eval(text))
    except _UNPARSEABLE:
        return NOT_SHOWN


class MaskingEvents(Events):
    """Flower's event capture, handing its state only masked events.

    Workers send task events only while a monitor asks for them (``worker_send_task_events``
    is off: they cost about 30 % of a worker's throughput). Flower asks every 5 s; this asks
    once more at start, so the tasks of Flower's first seconds are seen too.
    """

    def start(self) -> None:
        super().start()
        if self.enable_events:
            self.io_loop.add_callback(self.on_enable_events)

    def on_event(self, event: dict[str, Any]) -> None:
        super().on_event(mask_event(event))


class AuthenticatedMetrics(Metrics):
    """Flower's Prometheus metrics, behind its basic auth like every other page."""

    @web.authenticated
    async def get(self) -> None:
        await super().get()


def _authenticate_metrics() -> None:
    """Serve :class:`AuthenticatedMetrics` at ``/metrics`` (Flower's app reads this very list)."""
    for i, handler in enumerate(flower_urls.handlers):
        if isinstance(handler, tuple) and handler[1] is Metrics:
            flower_urls.handlers[i] = (handler[0], AuthenticatedMetrics)


def run(basic_auth: str, port: int, address: str) -> NoReturn:
    """Run Flower on ``address``:``port`` behind ``basic_auth`` (``user:password``[,…]); exits the process when it stops."""
    from celery.bin.celery import celery

    os.environ.update(FLOWER_BASIC_AUTH=basic_auth, FLOWER_PORT=str(port), FLOWER_ADDRESS=address)
    flower_app.Events = MaskingEvents
    _authenticate_metrics()
    celery.main(["-A", "worker.app", "flower"], prog_name="celery", auto_envvar_prefix="CELERY")
