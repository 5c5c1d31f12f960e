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

from config import Settings
from ihuyi import IhuyiClient, IhuyiError
from worker.ops.alerts import BALANCE_BELOW_THRESHOLD, Alerts
from worker.stores.accounts import AccountStates

log = logging.getLogger(__name__)


def check_one(client: IhuyiClient, states: AccountStates, account: str) -> int:
    """GetNum for one account through its ``client``; record and return the balance. Raises ``IhuyiError``."""
    balance = client.get_num()
    states.record_balance(account, balance)
    return balance


def check_all(settings: Settings, clients: dict[str, IhuyiClient], states: AccountStates,
              alerts: Alerts) -> dict[str, int | None]:
    """Check every account and alert as needed; a failed GetNum is logged and reported as None."""
    balances: dict[str, int | None] = {}
    for name in settings.accounts:
        try:
            balance = balances[name] = check_one(clients[name], states, name)
        except IhuyiError as exc:
            log.warning("balance check for account %s failed: %s", name, exc)
            alerts.for_code(exc.code, name, "on GetNum (balance check)", settings.host)
            balances[name] = None
            continue
        sentry_sdk.logger.info(f"balance of account {name}: {balance}",
                               attributes={"account": name, "balance": balance,
                                           "threshold": settings.balance_alert_threshold})
        if balance < settings.balance_alert_threshold:
            alerts.raise_alert(
                BALANCE_BELOW_THRESHOLD.name, name, level=BALANCE_BELOW_THRESHOLD.level,
                message=f"ihuyi account {name}: balance {balance} is under {settings.balance_alert_threshold}; "
                        f"{BALANCE_BELOW_THRESHOLD.advice}",
                details={"balance": balance, "threshold": settings.balance_alert_threshold},
            )
    return balances
