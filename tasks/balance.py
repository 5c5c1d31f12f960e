"""``check_balance``: the beat task that reads every account's balance, watched by Sentry Crons."""
from __future__ import annotations

import sentry_sdk
from celery import Task

from config import get_settings
from worker.app import app
from worker.ops.balance import check_all
from worker.ops.sentry import BALANCE_MONITOR, balance_monitor_config


@app.task(name="check_balance", bind=True)
def check_balance(self: Task) -> dict[str, int | None]:
    """GetNum for every account; returns account -> balance (None when the call failed).

    Each run checks in with Sentry Crons (in progress, then ok or error), so a beat that
    stopped, or workers that stopped taking its tasks, opens a missed check-in issue. The
    Celery integration's own beat monitoring cannot do it: it skips intervals shorter than
    a minute or not whole minutes, and BALANCE_CHECK_SECONDS is any number of seconds.
    """
    with sentry_sdk.monitor(monitor_slug=BALANCE_MONITOR, monitor_config=balance_monitor_config(get_settings())):
        return check_all(self.app.settings, self.app.sender.clients, self.app.stores.accounts, self.app.alerts)
