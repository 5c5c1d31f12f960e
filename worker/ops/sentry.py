"""Sentry in every worker and beat process, with nothing secret leaving them.

:func:`init_sentry` is called from Celery's ``celeryd_init``, ``worker_process_init`` and
``beat_init`` signals (worker/celeryconf.py). Without ``SENTRY_DSN`` it does nothing.

What is sent: errors, one transaction per task (sampled by ``SENTRY_TRACES_SAMPLE_RATE``;
in workers made by :func:`watch_tasks`, not the SDK's Celery integration, which beat keeps),
Sentry logs at WARNING and above plus the outcome and balance lines of worker/ops/reporting.py
and worker/ops/balance.py, alerts (worker/ops/alerts.py) and Crons check-ins (``check_balance`` and
the other beat entries).

What is never sent: every event (with its breadcrumbs), transaction (with its spans) and log
goes through :class:`Scrubber` first. Breadcrumbs leave a process only inside an error event,
so they are scrubbed there, once, not one by one as they are recorded. The scrubber drops
task arguments wherever they appear (they hold the mobile number and the verification
code), replaces every configured APIKEY with ``[Filtered]`` and masks every mainland mobile
number as ``138****8000``. Frames carry no local variables, request bodies are never
captured and ``send_default_pii`` stays off.

A slow or dead Sentry never holds up a send: the SDK queues envelopes for one background
thread per process (at most ``transport_queue_size`` of them; beyond that they are dropped),
that thread gives up on a request after :attr:`ShortTimeoutTransport.TIMEOUT` seconds, and a
process waits at most ``shutdown_timeout`` seconds for the queue when it exits.
"""
from __future__ import annotations

import importlib.metadata
import logging
import math
import random
import re
from collections.abc import Iterable
from typing import Any

import sentry_sdk
from celery import signals, states
from sentry_sdk.consts import OP, SPANSTATUS
from sentry_sdk.integrations.argv import ArgvIntegration
from sentry_sdk.integrations.atexit import AtexitIntegration
from sentry_sdk.integrations.celery import CeleryIntegration
from sentry_sdk.integrations.celery.beat import crons_task_failure, crons_task_retry, crons_task_success
from sentry_sdk.integrations.dedupe import DedupeIntegration
from sentry_sdk.integrations.excepthook import ExcepthookIntegration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.integrations.modules import ModulesIntegration
from sentry_sdk.tracing import TransactionSource
from sentry_sdk.transport import HttpTransport

from config import Settings

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"
#: The beat entry (worker/celeryconf.py) and Crons monitor of ``check_balance``.
BALANCE_MONITOR = "check-balance"
#: Keys whose values are a Celery task's arguments: dropped wherever they appear.
ARGUMENT_KEYS = frozenset({"args", "kwargs", "argsrepr", "kwargsrepr"})

# An 11-digit mainland mobile, optionally after +86/86, not inside a longer run of digits.
_MOBILE = re.compile(r"(?<!\d)(?:\+?86[ -]?)?(1[3-9]\d)\d{4}(\d{4})(?!\d)")
# The 11 digits every such number is: a search for them alone is ten times faster than for the
# pattern above (which no literal starts), and nearly every string has none.
_MOBILE_DIGITS = re.compile(r"1[3-9]\d{9}")
# Trace, span, event and task ids: hex noise in which a run of digits is no phone number.
_ID = re.compile(r"[0-9a-f]{16}|[0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class Scrubber:
    """Removes the APIKEYs, full mobile numbers and task arguments from anything the SDK sends."""

    def __init__(self, secrets: Iterable[str]) -> None:
        # Longest first, so a key that contains another is replaced whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        # Most strings (keys, tags, names) are shorter than any number or APIKEY: left as they are.
        self._shortest = min([11, *map(len, self._secrets)])

    def text(self, value: str) -> str:
        if len(value) < self._shortest:
            return value
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, FILTERED)
        # Searched before it is replaced: few strings hold a number, and an id may look like one.
        if len(value) < 11 or _MOBILE_DIGITS.search(value) is None or _ID.fullmatch(value):
            return value
        return _MOBILE.sub(r"\1****\2", value)

    def scrub(self, value: Any) -> Any:
        """A copy of ``value`` (JSON-like: dicts, lists, tuples, strings, numbers) with nothing secret."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.scrub(k): self.scrub(v) for k, v in value.items() if k not in ARGUMENT_KEYS}
        if isinstance(value, (list, tuple)):
            return [self.scrub(v) for v in value]
        return value

    def event(self, event: Any, hint: Any) -> Any:
        """The SDK's ``before_send*`` hook. ``hint`` holds the raw objects, which are never sent."""
        return self.scrub(event)


class ShortTimeoutTransport(HttpTransport):
    """The SDK's HTTP transport, giving up on a request after 5 s instead of 30 s."""

    TIMEOUT = 5


def release() -> str | None:
    try:
        return f"voicecode@{importlib.metadata.version('voicecode')}"
    except importlib.metadata.PackageNotFoundError:
        return None  # not installed: the SDK falls back to SENTRY_RELEASE


def balance_monitor_config(settings: Settings) -> dict[str, Any]:
    """Crons settings for ``check_balance``: the beat interval in whole minutes (Crons' unit).

    A shorter ``BALANCE_CHECK_SECONDS`` checks in more often than Sentry expects, which it
    accepts; a check-in missing for an interval plus a margin of one more opens an issue.
    """
    minutes = max(1, math.ceil(settings.balance_check_seconds / 60))
    return {
        "schedule": {"type": "interval", "value": minutes, "unit": "minute"},
        "checkin_margin": minutes,
        "max_runtime": minutes + 1,
        "failure_issue_threshold": 1,
        "recovery_threshold": 1,
    }


#: A transaction's status by the state a run ended in; retried, ignored (parked) and rejected runs: aborted.
_STATUS = {states.SUCCESS: SPANSTATUS.OK, states.FAILURE: SPANSTATUS.INTERNAL_ERROR}


def _task_started(task_id: str, task: Any, **_: Any) -> None:
    """Give the run a scope of its own and, when sampled, a transaction; nothing else.

    A pool thread (or process) runs one task at a time, so its isolation scope is the run's:
    cleared here, nothing of the run before (tags, breadcrumbs, trace) carries over. The sampling is
    decided before anything is built, so an unsampled run costs a random number.
    """
    scope = sentry_sdk.get_isolation_scope()
    scope.clear()
    scope.set_new_propagation_context()
    scope.set_tag("celery_task_id", task_id)
    if random.random() < sentry_sdk.get_client().options["traces_sample_rate"]:
        sentry_sdk.get_current_scope().span = sentry_sdk.start_transaction(
            op=OP.QUEUE_TASK_CELERY, name=task.name, source=TransactionSource.TASK, sampled=True)


def _task_finished(state: str, **_: Any) -> None:
    """Send the run's transaction, if it has one, with the state the run ended in as its status."""
    scope = sentry_sdk.get_current_scope()
    transaction = scope.span
    if transaction is not None:
        transaction.set_status(_STATUS.get(state, SPANSTATUS.ABORTED))
        transaction.finish(scope)
        scope.span = None


def _task_failed(exception: BaseException, **_: Any) -> None:
    """A run that raised is an error event, tagged with its task id like the rest of the run."""
    sentry_sdk.capture_exception(exception)


def watch_tasks() -> None:
    """What the SDK's Celery integration did for a worker, at a fraction of its cost per task.

    The integration wrapped every run in a new isolation scope, a trace continued from the
    message, a transaction (built even when unsampled), a ``queue.process`` span and a new
    broker ``Connection`` object just to name the transport: about a third of a millisecond of
    CPU per task, sampled or not. Kept: the run's own scope and ``celery_task_id`` tag, a
    ``queue.task.celery`` transaction per sampled run, an error event for a run that raised, and
    the Crons check-ins of the runs beat started (the ``sentry-monitor-*`` headers beat's own
    integration puts on them). Celery's own ERROR line about a failed run carries the same
    exception, which DedupeIntegration drops: the failure is one event.
    """
    signals.task_prerun.connect(_task_started, weak=False)
    signals.task_postrun.connect(_task_finished, weak=False)
    signals.task_failure.connect(_task_failed, weak=False)
    for handler, signal in ((crons_task_success, signals.task_success), (crons_task_failure, signals.task_failure),
                            (crons_task_retry, signals.task_retry)):
        signal.connect(handler, weak=False)


def init_sentry(settings: Settings, process: str) -> bool:
    """Start Sentry in this process (``process``: worker or beat); False when ``SENTRY_DSN`` is unset."""
    if not settings.sentry_dsn:
        return False
    scrubber = Scrubber(account.apikey for account in settings.accounts.values())
    version = release()
    if process == "worker":
        watch_tasks()
        celery = []
    else:
        # Beat: Crons for every beat entry on a whole-minute schedule, but check_balance, which
        # checks in itself (tasks/balance.py) whatever its interval in seconds.
        celery = [CeleryIntegration(monitor_beat_tasks=True, exclude_beat_tasks=[BALANCE_MONITOR])]
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        release=version,
        traces_sample_rate=settings.sentry_traces_sample_rate,
        # No sentry-trace and baggage headers on requests to ihuyi: it is not ours to trace,
        # and baggage would hand it our release, environment and Sentry public key.
        trace_propagation_targets=[],
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        # No walk up the stack after every HTTP call to name the line that made it: it is
        # always the ihuyi client's.
        enable_http_request_source=False,
        enable_logs=True,
        before_send=scrubber.event,
        before_send_transaction=scrubber.event,
        before_send_log=scrubber.event,
        transport=ShortTimeoutTransport,
        shutdown_timeout=2,
        # Only the integrations below. The auto-enabled ones (Redis above all) added a span
        # and a breadcrumb to every Redis command: a fifth more worker time per task, and key
        # names in every event. Of the SDK's defaults, threading is left out: it copied the
        # scope into every task handed to the pool, which the Celery integration then
        # replaced with the task's own.
        auto_enabling_integrations=False,
        default_integrations=False,
        integrations=[
            ArgvIntegration(), AtexitIntegration(), DedupeIntegration(), ExcepthookIntegration(),
            ModulesIntegration(),
            # No StdlibIntegration: its span and breadcrumb for every HTTP call cost each send
            # about 0.15 ms of CPU, sampled or not. The Submit's span in a sampled transaction is
            # made where the Submit is (worker/sending/submit.py).
            *celery,
            # Errors become events; Sentry logs get WARNING and up (the outcome lines are
            # sent directly), not every INFO line Celery writes, and so do breadcrumbs: two
            # INFO lines per task made two breadcrumbs per task, read only with an error.
            LoggingIntegration(level=logging.WARNING, event_level=logging.ERROR, sentry_logs_level=logging.WARNING),
        ],
    )
    sentry_sdk.get_global_scope().set_tag("process", process)
    log.info("Sentry on: environment %s, release %s, process %s", settings.sentry_environment, version, process)
    return True
