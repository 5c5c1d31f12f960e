"""``raise_guard_alerts``: the beat task that turns the door's trips into alerts.

A web app refuses a request over an account's daily budget, or to a range under attack,
without Sentry of its own; the trip waits in the state Redis (worker/stores/guards.py) for
this task, on a worker, to raise it.
"""
from __future__ import annotations

from celery import Task

from worker.app import app
from worker.stores.guards import Guards


@app.task(name="raise_guard_alerts", bind=True)
def raise_guard_alerts(self: Task) -> int:
    """Raise an alert for every trip since the last run; returns how many were raised."""
    return self.app.alerts.for_trips(Guards(self.app.stores.redis))
