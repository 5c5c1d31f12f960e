"""``voicecode verify start|check``: a verification from the command line, one JSON object each.

``start`` prints ``verification_id``, ``status``, the masked ``mobile``, ``expires_at`` (Unix
time), ``task_id`` and, with ``--wait``, the send's ``result``; ``check`` prints ``status`` and
``attempts_left`` and exits 0 only for ``approved``. Neither ever prints the code it sent.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from tasks.producer import check_verification, default_producer, start_verification


def run_verify(args: argparse.Namespace) -> int:
    return _start(args) if args.action == "start" else _check(args)


def _start(args: argparse.Namespace) -> int:
    started = start_verification(args.mobile, account=args.account, ttl=args.ttl, requester=args.requester)
    shown: dict[str, Any] = {"verification_id": started.id, "status": started.status, "mobile": started.mobile,
                             "expires_at": started.expires_at, "task_id": started.task_id}
    status = 0
    if args.wait:
        from celery.exceptions import TimeoutError as CeleryTimeout

        try:
            shown["result"] = default_producer().result(started.task_id).get(timeout=args.wait, propagate=False)
        except CeleryTimeout:
            shown["result"] = None
            print(f"voicecode: no result within {args.wait:g} s (task {started.task_id} is still queued or running)",
                  file=sys.stderr)
            status = 1
    print(json.dumps(shown, ensure_ascii=False))
    return status


def _check(args: argparse.Namespace) -> int:
    answer = check_verification(args.mobile, args.code)
    print(json.dumps({"status": answer.status, "attempts_left": answer.attempts_left}))
    return 0 if answer.status == "approved" else 1
