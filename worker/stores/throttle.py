"""Per-number throttle over several windows (e.g. 1/60s, 5/h, 10/d), pool-wide in Redis.

ihuyi freezes accounts that call one person too often (code 408), so the service limits
calls per called number itself. Each number has a sliding-window log: one sorted set of
its recent calls (score = the Redis server's time), trimmed to the longest window. The rules
are ``throttle_lib.lua``'s, run inside the atomic scripts that decide a request: the door's
reserve (worker/stores/idempotency_reserve.lua) and the send gate (worker/stores/gate.lua),
so workers and producers on every host see each other's calls.

When ihuyi itself refuses a number as called too often (codes 4080-4086), the number is
*blocked* for the window the code names (ihuyi/codes.py), whatever ``MOBILE_THROTTLE`` says:
a key beside its log (:func:`block_key`) that every check reads first, the producer's too
(worker/stores/idempotency_reserve.lua), so the next enqueue is refused with the time left.

Keys hold a hash of the number, never the number itself.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence

import redis

from config.settings import Window
from worker.stores import scripts


def _member(request_id: str | None) -> str:
    """A request's entry in a number's log: a hash, since a request id may hold the number itself."""
    return "" if request_id is None else hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:16]


def number_hash(mobile: str) -> str:
    """``mobile`` as the stores keep it: a SHA-256 prefix, so no number is readable in Redis."""
    return hashlib.sha256(mobile.encode("utf-8")).hexdigest()[:24]


def number_key(prefix: str, mobile: str) -> str:
    """The throttle key of ``mobile``."""
    return prefix + number_hash(mobile)


def window_args(windows: Sequence[Window]) -> list[str]:
    """``windows`` as the scripts take them: limit, seconds, limit, seconds, ..."""
    return [str(v) for w in windows for v in (w.limit, w.seconds)]


def block_key(log_key: str) -> str:
    """The key of the block beside the number's log ``log_key`` (a :func:`number_key`)."""
    return log_key + ":blocked"


class MobileThrottle:
    """A called number's ``windows`` and keys, for the scripts that enforce them across the pool,
    and the writes made outside them: ihuyi's blocks and calls given back."""

    def __init__(self, client: redis.Redis, windows: Sequence[Window], prefix: str = "voicecode:throttle:") -> None:
        self._redis = client
        self._block = scripts.register(client, "throttle_block")
        self.windows = tuple(windows)
        self.prefix = prefix
        self.window_args = window_args(self.windows)

    def block(self, mobile: str, seconds: float) -> None:
        """Refuse every call to ``mobile`` for ``seconds`` (ihuyi said it was called too often).

        A block already running longer is kept. Applies even with no windows configured:
        ihuyi's own limits hold whatever ours are.
        """
        self._block(keys=[block_key(number_key(self.prefix, mobile))], args=[max(1, round(seconds * 1000))])

    def release(self, mobile: str, request_id: str) -> None:
        """Take back the call recorded for ``request_id``, for a Submit that cannot have reached ihuyi."""
        self._redis.zrem(number_key(self.prefix, mobile), _member(request_id))

    def keys(self, mobile: str) -> tuple[str, str]:
        """The keys of ``mobile``'s log and block."""
        key = number_key(self.prefix, mobile)
        return key, block_key(key)

    @staticmethod
    def member(request_id: str | None) -> str:
        """The entry of ``request_id`` in a number's log."""
        return _member(request_id)
