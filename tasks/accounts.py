"""``probe_paused_accounts``: the beat task that resumes paused accounts once ihuyi takes them again."""
from __future__ import annotations

from celery import Task

from worker.app import app
from worker.stores.accounts import probe


@app.task(name="probe_paused_accounts", bind=True)
def probe_paused_accounts(self: Task) -> list[str]:
    """GetNum for every paused account; returns the names resumed."""
    states, clients = self.app.stores.accounts, self.app.sender.clients
    return [name for name in self.app.settings.accounts
            if states.paused(name) is not None and probe(states, name, clients[name].get_num)]
