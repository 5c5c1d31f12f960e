"""``probe_paused_accounts``: the beat task that resumes paused accounts once ihuyi takes them again."""
from __future__ import annotations

from celery import Task

from worker.app import app
from worker.stores.accounts import probe


@app.task(name="probe_paused_accounts", bind=True)
def probe_paused_accounts(self: Task) -> list[str]:
    """GetNum for every account paused pool-wide, or on the host this runs on; returns what was
    resumed: ``name`` for the pool, ``name@host`` for this host.

    A host's pause is probed from that host only (its IP, its clock): each host's send flow
    also probes its own (worker/sending/flow.py), whichever host beat's task lands on.
    """
    states, clients, host = self.app.stores.accounts, self.app.sender.clients, self.app.settings.host
    return [name if where is None else f"{name}@{where}"
            for name in self.app.settings.accounts for where in (None, host)
            if probe(states, name, clients[name].get_num, where)]
