"""Every final outcome of a send, reported to Sentry; alerts for the outcomes that need a person.

Each final result (the task's JSON result) is reported twice, both tagged ``account``,
``outcome`` and ``ihuyi_code`` (plus ``reason`` when there is one):

- as tags on the task's Sentry transaction (``send_voice_code``, op ``queue.task.celery``),
  sampled by ``SENTRY_TRACES_SAMPLE_RATE``: Explore → Traces, filter ``outcome:dead_lettered``;
- as one Sentry log line, never sampled: Explore → Logs, filter ``outcome:expired account:default``.

``outcome`` is the result's ``status`` (submitted, duplicate, dead_lettered, expired), except
that the two dead letters no Submit was made for are named for why: ``throttled`` and
``account_paused``. ``ihuyi_code`` is ihuyi's reply code, or ``none``.

A dead letter whose code needs a person (worker/ops/alerts.py) raises its alert, deduplicated
pool-wide; an ``account_paused`` one raises the alert of the code that paused the account,
so an account left paused is recalled once per window while sends are being turned away.
"""
from __future__ import annotations

import logging
from typing import Any

import sentry_sdk

from worker.ops.alerts import Alerts

log = logging.getLogger(__name__)

#: Dead-letter reasons reported as outcomes of their own.
NAMED_REASONS = frozenset({"throttled", "account_paused"})
_SEVERITY = {"submitted": "info", "duplicate": "info", "expired": "warning", "throttled": "warning",
             "account_paused": "warning", "dead_lettered": "error"}


def outcome_of(result: dict[str, Any]) -> str:
    reason = result.get("reason")
    return reason if reason in NAMED_REASONS else str(result.get("status"))


def tags_of(result: dict[str, Any]) -> dict[str, str]:
    code = result.get("code")
    tags = {"account": str(result.get("account") or "none"), "outcome": outcome_of(result),
            "ihuyi_code": "none" if code is None else str(code)}
    if result.get("reason"):
        tags["reason"] = str(result["reason"])
    return tags


def report_outcome(result: dict[str, Any], alerts: Alerts) -> None:
    """Report one final result. Never raises."""
    try:
        _report(result, alerts)
    except Exception:  # reporting must never fail a send
        log.exception("reporting an outcome failed")


def _report(result: dict[str, Any], alerts: Alerts) -> None:
    tags = tags_of(result)
    sentry_sdk.set_tags(tags)  # the task's own scope: its transaction and any event it raises
    capture = getattr(sentry_sdk.logger, _SEVERITY.get(tags["outcome"], "info"))
    details = {key: result[key] for key in ("mobile", "attempts", "voiceid", "request_id")
               if result.get(key) is not None}
    capture(f"voice code {tags['outcome']} on account {tags['account']} (ihuyi code {tags['ihuyi_code']})",
            attributes={**tags, **details})
    if result.get("status") == "dead_lettered" and result.get("account"):
        where = "(account paused, send turned away)" if tags["outcome"] == "account_paused" else "on Submit"
        alerts.for_code(result.get("code"), result["account"], where)
