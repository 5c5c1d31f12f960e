"""``probe_paused_accounts``: the beat task that resumes paused accounts once ihuyi takes them again."""
from __future__ import annotations

from config import get_settings
from worker import runtime
from worker.accounts import probe
from worker.app import app


@app.task(name="probe_paused_accounts")
def probe_paused_accounts() -> list[str]:
    """GetNum for every paused account; returns the names resumed."""
    states, clients = runtime.account_states(), runtime.sender().clients
    return [name for name in get_settings().accounts
            if states.paused(name) is not None and probe(states, name, clients[name].get_num)]
