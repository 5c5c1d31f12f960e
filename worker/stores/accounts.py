"""Account protection state, pool-wide in Redis: paused accounts, last ihuyi code, balance.

After an account-scoped permanent code (400, 405, 4050, 4051, 4052, 408) ihuyi will refuse
every call on the account, and hammering it risks worse (408 freezes abused accounts). The
account is paused for the whole pool until a GetNum :func:`probe` shows it usable again or
an operator resumes it. One hash per account holds the pause, the last code and the balance.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis

from ihuyi import IhuyiError
from worker.stores import scripts

LOW_BALANCE = 4051

_PAUSE_FIELDS = ("paused_code", "paused_msg", "paused_since")


@dataclass(frozen=True)
class Pause:
    """Why and since when (Unix seconds, Redis server clock) an account is paused."""

    code: int
    msg: str
    since: float


@dataclass(frozen=True)
class AccountState:
    """What the pool knows about one account; None where nothing is known yet."""

    name: str
    paused: Pause | None
    last_code: int | None
    balance: int | None
    balance_at: float | None


def _text(value: bytes | str | None) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _pause(code: bytes | str | None, msg: bytes | str | None, since: bytes | str | None) -> Pause | None:
    if code is None:
        return None
    return Pause(int(code), _text(msg) or "", float(since or 0))


class AccountStates:
    """Reads and changes the shared state of accounts, one hash per account under ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:account:") -> None:
        self._redis = client
        self._pause = scripts.register(client, "accounts_pause")
        self._balance = scripts.register(client, "accounts_balance")
        self.prefix = prefix

    def pause(self, account: str, code: int, msg: str) -> bool:
        """Pause ``account`` for the pool; True when this call paused it, False if it already was."""
        return bool(self._pause(keys=[self.prefix + account], args=[code, msg]))

    def resume(self, account: str) -> bool:
        """Let ``account`` send again; True when it was paused."""
        return self._redis.hdel(self.prefix + account, *_PAUSE_FIELDS) > 0

    def paused(self, account: str) -> Pause | None:
        """The account's pause, or None when it may send. One round trip: asked before every Submit."""
        return _pause(*self._redis.hmget(self.prefix + account, _PAUSE_FIELDS))

    def record_code(self, account: str, code: int) -> None:
        """Remember the last ihuyi reply code seen for ``account``."""
        self._redis.hset(self.prefix + account, "last_code", code)

    def record_balance(self, account: str, balance: int) -> None:
        """Remember the account's balance from GetNum, stamped with the Redis server's time."""
        self._balance(keys=[self.prefix + account], args=[balance])

    def snapshot(self, names: Iterable[str]) -> list[AccountState]:
        """The state of each named account, in order, in one round trip."""
        names = list(names)
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.prefix + name)
        states = []
        for name, raw in zip(names, pipe.execute()):
            fields = {_text(k): _text(v) for k, v in raw.items()}
            balance, balance_at, last_code = fields.get("balance"), fields.get("balance_at"), fields.get("last_code")
            states.append(AccountState(
                name=name,
                paused=_pause(*(fields.get(f) for f in _PAUSE_FIELDS)),
                last_code=None if last_code is None else int(last_code),
                balance=None if balance is None else int(balance),
                balance_at=None if balance_at is None else float(balance_at),
            ))
        return states


def probe(states: AccountStates, account: str, get_num: Callable[[], int]) -> bool:
    """Resume a paused ``account`` if ihuyi takes it again; True when it was resumed.

    ``get_num`` is the account's ``IhuyiClient.get_num``. A balance it returns is recorded;
    a 4051 (balance used up) pause ends only when the balance is above 0, any other pause
    as soon as GetNum succeeds. An ``IhuyiError`` keeps the account paused (its code, if
    any, is recorded). An account that is not paused is left alone: GetNum is not called.
    """
    pause = states.paused(account)
    if pause is None:
        return False
    try:
        balance = get_num()
    except IhuyiError as exc:
        if exc.code is not None:
            states.record_code(account, exc.code)
        return False
    states.record_balance(account, balance)
    if pause.code == LOW_BALANCE and balance <= 0:
        return False
    return states.resume(account)
