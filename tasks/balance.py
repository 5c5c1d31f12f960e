"""``check_balance``: the beat task that reads every account's balance."""
from __future__ import annotations

from worker.app import app
from worker.balance import check_all


@app.task(name="check_balance")
def check_balance() -> dict[str, int | None]:
    """GetNum for every account; returns account -> balance (None when the call failed)."""
    return check_all()
