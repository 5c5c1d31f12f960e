"""Account protection state, pool-wide in Redis: paused accounts, last ihuyi code, balance.

After an account-scoped permanent code (405, 4050, 4051, 408) ihuyi will refuse every call
on the account, and hammering it risks worse (408 freezes abused accounts). The account is
paused for the whole pool until a GetNum :func:`probe` shows it usable again or an operator
resumes it.

Codes about the sending host (400, 4052: its IP; a 405 with the dynamic password from a host
whose clock is off) pause the account on **that host only**: its other hosts go on sending,
and the paused host probes it again from itself (its IP, its clock) before it sends through
it. A host is ``VOICECODE_HOST`` (config/settings.py).

One hash per account holds it all: the pool's pause (``paused_code``, ``paused_msg``,
``paused_since``), each host's (the same fields ending ``@<host>``), the last code and the
balance. The rules of a pause (which one stops a host, when a host's is probed and by whom)
are written once, in ``accounts_lib.lua``: the scripts here and the send gate
(worker/stores/gate.py) all run them.
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
    """Why and since when (Unix seconds, Redis server clock) an account is paused, and where:
    ``host`` None for the whole pool, else the one host it is paused on."""

    code: int
    msg: str
    since: float
    host: str | None = None


@dataclass(frozen=True)
class AccountState:
    """What the pool knows about one account; None where nothing is known yet."""

    name: str
    paused: Pause | None
    last_code: int | None
    balance: int | None
    balance_at: float | None
    #: The hosts it is paused on (each a Pause with its ``host``), by host name.
    host_pauses: tuple[Pause, ...] = ()


def _text(value: bytes | str | None) -> str | None:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _suffix(host: str | None) -> str:
    return "" if host is None else f"@{host}"


def _fields(host: str | None) -> list[str]:
    return [field + _suffix(host) for field in _PAUSE_FIELDS]


def _pause(code: bytes | str | None, msg: bytes | str | None, since: bytes | str | None,
           host: str | None = None) -> Pause | None:
    if code is None:
        return None
    return Pause(int(code), _text(msg) or "", float(since or 0), host)


def pause_of(reply: list[bytes | str] | None) -> Pause | None:
    """The :class:`Pause` an ``account_paused`` reply (accounts_lib.lua) stands for: code, msg,
    since and the suffix it was found under ('' for the pool's, ``@<host>`` for a host's);
    None for none (no reply, or an empty code)."""
    if not reply or not reply[0]:
        return None
    code, msg, since, suffix = (_text(v) for v in reply)
    return _pause(code, msg, since, suffix.partition("@")[2] or None)


class AccountStates:
    """Reads and changes the shared state of accounts, one hash per account under ``prefix``."""

    def __init__(self, client: redis.Redis, prefix: str = "voicecode:account:") -> None:
        self._redis = client
        self._pause = scripts.register(client, "accounts_pause")
        self._balance = scripts.register(client, "accounts_balance")
        self._paused = scripts.register(client, "accounts_paused")
        self.prefix = prefix

    def key(self, account: str) -> str:
        """The hash of ``account``."""
        return self.prefix + account

    def pause(self, account: str, code: int, msg: str, host: str | None = None) -> bool:
        """Pause ``account`` for the pool, or on ``host`` only; True when this call paused it,
        False if it already was (there)."""
        return bool(self._pause(keys=[self.key(account)], args=[code, msg, _suffix(host)]))

    def resume(self, account: str, host: str | None = None) -> bool:
        """Let ``account`` send again from the pool (or from ``host``); True when it was paused there."""
        return self._redis.hdel(self.key(account), *_fields(host)) > 0

    def resume_everywhere(self, account: str) -> bool:
        """End the pool's pause and every host's (an operator's resume); True when there was one."""
        paused = [f for f in self._redis.hkeys(self.key(account)) if f.startswith(b"paused_")]
        return bool(paused) and self._redis.hdel(self.key(account), *paused) > 0

    def probe_key(self, account: str, host: str) -> str:
        """The lock that says a probe of ``host``'s pause of ``account`` ran lately."""
        return f"{self.prefix}{account}:probe{_suffix(host)}"

    def paused(self, account: str, host: str | None = None) -> Pause | None:
        """The pause that stops ``account`` sending from ``host``: the pool's, else that host's
        (with ``host`` None, the pool's only); None when it may send. A send asks the gate,
        which runs the same rule (worker/stores/gate.py)."""
        return pause_of(self._paused(keys=[self.key(account)], args=[_suffix(host)]))

    def record_code(self, account: str, code: int) -> None:
        """Remember the last ihuyi reply code seen for ``account``."""
        self._redis.hset(self.key(account), "last_code", code)

    def record_balance(self, account: str, balance: int) -> None:
        """Remember the account's balance from GetNum, stamped with the Redis server's time."""
        self._balance(keys=[self.key(account)], args=[balance])

    def snapshot(self, names: Iterable[str]) -> list[AccountState]:
        """The state of each named account, in order, in one round trip."""
        names = list(names)
        pipe = self._redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.key(name))
        states = []
        for name, raw in zip(names, pipe.execute()):
            fields = {_text(k): _text(v) for k, v in raw.items()}
            balance, balance_at, last_code = fields.get("balance"), fields.get("balance_at"), fields.get("last_code")
            hosts = sorted(f.partition("@")[2] for f in fields if f.startswith("paused_code@"))
            states.append(AccountState(
                name=name,
                paused=_pause(*(fields.get(f) for f in _PAUSE_FIELDS)),
                last_code=None if last_code is None else int(last_code),
                balance=None if balance is None else int(balance),
                balance_at=None if balance_at is None else float(balance_at),
                host_pauses=tuple(_pause(*(fields.get(f) for f in _fields(host)), host=host) for host in hosts),
            ))
        return states


def probe(states: AccountStates, account: str, get_num: Callable[[], int], host: str | None = None) -> bool:
    """Resume ``account``, paused for the pool (or on ``host``), if ihuyi takes it again; True when resumed.

    ``get_num`` is the account's ``IhuyiClient.get_num``, called from the host whose pause is
    probed. A balance it returns is recorded; a 4051 (balance used up) pause ends only when
    the balance is above 0, any other pause as soon as GetNum succeeds. An ``IhuyiError``
    keeps the account paused (its code, if any, is recorded). An account not paused there
    (or, probing a host, paused for the whole pool) is left alone: GetNum is not called.
    """
    pause = states.paused(account, host)
    if pause is None or pause.host != host:
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
    return states.resume(account, host)
