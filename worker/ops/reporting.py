"""Every final outcome of a send, reported to Sentry.

Each final result (the task's JSON result) is reported twice, both tagged ``account``,
``outcome`` and ``ihuyi_code`` (plus ``reason`` when there is one):

- as tags on the task's Sentry transaction (``send_voice_code``, op ``queue.task.celery``),
  sampled by ``SENTRY_TRACES_SAMPLE_RATE``: Explore → Traces, filter ``outcome:dead_lettered``;
- as one Sentry log line, never sampled: Explore → Logs, filter ``outcome:expired account:default``.

``outcome`` is the result's ``status`` (submitted, duplicate, dead_lettered, expired,
request_id_conflict), except that the dead letters no Submit was made for are named for why:
``throttled``, ``account_paused`` and ``over_budget`` (worker/sending/flow.py's ``outcome_of``). ``ihuyi_code`` is ihuyi's reply
code, or ``none``.

The alerts are raised from what the send flow says it met (``Alerts.for_refusal``); the
pool-wide outcome counters are written by the flow, in the same round trip as the send's
other metrics.
"""
from __future__ import annotations

import logging
from typing import Any

import sentry_sdk

from worker.sending.flow import outcome_of

log = logging.getLogger(__name__)

_SEVERITY = {"submitted": "info", "duplicate": "info", "expired": "warning", "throttled": "warning",
             "account_paused": "warning", "over_budget": "warning", "request_id_conflict": "warning",
             "dead_lettered": "error"}


def tags_of(result: dict[str, Any]) -> dict[str, str]:
    code = result.get("code")
    tags = {"account": str(result.get("account") or "none"), "outcome": outcome_of(result),
            "ihuyi_code": "none" if code is None else str(code)}
    if result.get("reason"):
        tags["reason"] = str(result["reason"])
    return tags


def report_outcome(result: dict[str, Any]) -> None:
    """Report one final result. Never raises."""
    try:
        _report(result)
    except Exception:  # reporting must never fail a send
        log.exception("reporting an outcome failed")


def _report(result: dict[str, Any]) -> None:
    if not sentry_sdk.get_client().is_active():
        return  # no SENTRY_DSN: building the log line costs a copy of the scopes, for nothing
    tags = tags_of(result)
    sentry_sdk.set_tags(tags)  # the task's own scope: its transaction and any event it raises
    capture = getattr(sentry_sdk.logger, _SEVERITY.get(tags["outcome"], "info"))
    details = {key: result[key] for key in ("mobile", "attempts", "voiceid", "request_id")
               if result.get(key) is not None}
    capture(f"voice code {tags['outcome']} on account {tags['account']} (ihuyi code {tags['ihuyi_code']})",
            attributes={**tags, **details})
