"""Account balances: GetNum for each account, remembered in the shared state."""
from __future__ import annotations

import logging

from config import get_settings
from ihuyi import IhuyiError
from worker import runtime
from worker.state import state_redis

log = logging.getLogger(__name__)
BALANCE_KEY = "voicecode:balance:"


def check_one(account: str) -> int:
    """GetNum for one account; record and return the balance. Raises ``IhuyiError``."""
    balance = runtime.sender().clients[account].get_num()
    state_redis().set(BALANCE_KEY + account, balance)
    return balance


def check_all() -> dict[str, int | None]:
    """Check every account; a failure is logged and reported as None, the others still run."""
    balances: dict[str, int | None] = {}
    for name in get_settings().accounts:
        try:
            balances[name] = check_one(name)
        except IhuyiError as exc:
            log.warning("balance check for account %s failed: %s", name, exc)
            balances[name] = None
    return balances
