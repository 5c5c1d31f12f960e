"""The balance monitor: GetNum for each account, recorded, with an alert under the threshold.

``check_all`` runs from the ``check_balance`` beat task every ``BALANCE_CHECK_SECONDS``.
Each balance is recorded in the account's shared state (``voicecode accounts`` shows it)
and sent to Sentry as a log line tagged ``account`` with the ``balance``. A balance under
``BALANCE_ALERT_THRESHOLD`` raises ``balance_below_threshold`` (warning); a GetNum refused
with a code that needs a person (405, 4050, ...) raises that code's alert, so a frozen or
misconfigured account is noticed even while nothing is being sent through it.
"""
from __future__ import annotations

import logging

import sentry_sdk

from config import get_settings
from ihuyi import IhuyiError
from worker import runtime
from worker.alerts import BALANCE_BELOW_THRESHOLD, alerts

log = logging.getLogger(__name__)


def check_one(account: str) -> int:
    """GetNum for one account; record and return the balance. Raises ``IhuyiError``."""
    balance = runtime.sender().clients[account].get_num()
    runtime.account_states().record_balance(account, balance)
    return balance


def check_all() -> dict[str, int | None]:
    """Check every account and alert as needed; a failed GetNum is logged and reported as None."""
    settings = get_settings()
    balances: dict[str, int | None] = {}
    for name in settings.accounts:
        try:
            balance = balances[name] = check_one(name)
        except IhuyiError as exc:
            log.warning("balance check for account %s failed: %s", name, exc)
            alerts().for_code(exc.code, name, "on GetNum (balance check)")
            balances[name] = None
            continue
        sentry_sdk.logger.info(f"balance of account {name}: {balance}",
                               attributes={"account": name, "balance": balance,
                                           "threshold": settings.balance_alert_threshold})
        if balance < settings.balance_alert_threshold:
            alerts().raise_alert(
                BALANCE_BELOW_THRESHOLD.name, name, level=BALANCE_BELOW_THRESHOLD.level,
                message=f"ihuyi account {name}: balance {balance} is under {settings.balance_alert_threshold}; "
                        f"{BALANCE_BELOW_THRESHOLD.advice}",
                details={"balance": balance, "threshold": settings.balance_alert_threshold},
            )
    return balances
