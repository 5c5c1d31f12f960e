"""Verification codes the service generates and checks itself, like Twilio Verify's start and check.

One record per number, a Redis hash under a keyed hash of the number, holding only an HMAC
of the code: neither the number nor the code can be read back from Redis, and without the
server secret neither can be recovered by trying every number or code against the hashes.

Decisions:

- A second ``start`` for a number REPLACES its pending verification (new code, new id, the
  old code stops working): re-sending the old code would need the plain code, which is never
  stored. ``start`` reports the replaced verification's task id so the caller can revoke
  that call if it has not been made yet.
- Single use: an approved check deletes the record, so checking again answers ``not_found``.
- A code that is not 4–6 ASCII digits is refused with ``ValueError`` before Redis is asked:
  it can never match, so it costs no attempt (a typo does not lock the person out) and an
  attacker gains nothing from it.
- An expired record is kept for ``grace`` seconds after its expiry, answering ``expired``
  rather than ``not_found`` so the person can be told to ask for a new code.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal, cast

import redis

from worker.stores import scripts

CheckStatus = Literal["approved", "rejected", "expired", "locked", "not_found"]

_CODE = re.compile(r"[0-9]{4,6}")


@dataclass(frozen=True)
class Verification:
    """A started verification as the caller may show it: the number masked, the code absent.

    ``replaced_task_id`` is the task of the pending verification this one replaced, if that
    one had a task attached.
    """

    id: str
    mobile: str
    expires_at: float
    status: Literal["pending"] = "pending"
    replaced_task_id: str | None = None


@dataclass(frozen=True)
class CheckResult:
    """The answer to one check; ``attempts_left`` counts the wrong attempts still allowed (0 unless rejected)."""

    status: CheckStatus
    attempts_left: int = 0


class VerificationStore:
    """Starts verifications and checks codes against them, atomically and at most ``max_attempts`` wrong times.

    Every decision is one Lua script on the Redis server's clock, so checks racing on any
    number of hosts can neither both approve a code nor together exceed the attempt limit.
    """

    def __init__(
        self,
        client: redis.Redis,
        secret: bytes,
        *,
        max_attempts: int = 5,
        prefix: str = "voicecode:verify:",
        grace: int = 600,
    ) -> None:
        if not secret:
            raise ValueError("secret: must not be empty")
        if max_attempts < 1:
            raise ValueError(f"max_attempts: must be at least 1, got {max_attempts}")
        self._secret = secret
        self.max_attempts = max_attempts
        self.prefix = prefix
        self.grace = grace
        self._start = scripts.register(client, "verifications_start")
        self._check = scripts.register(client, "verifications_check")
        self._attach = scripts.register(client, "verifications_attach")

    def start(self, mobile: str, ttl: int, code: str) -> Verification:
        """A new verification of ``mobile`` by ``code`` (see :func:`new_code`), valid ``ttl`` seconds.

        The code goes only into the task message that has it read aloud; Redis keeps its HMAC.
        Any pending verification of the number is replaced (see the module's notes).
        """
        if not _CODE.fullmatch(code):
            raise ValueError("code: must be 4 to 6 ASCII digits")
        if ttl < 1:
            raise ValueError(f"ttl: must be at least 1 second, got {ttl}")
        verification_id = secrets.token_urlsafe(16)
        expires_at, replaced = self._start(
            keys=[self._key(mobile)],
            args=[verification_id, self._digest(mobile, code), ttl, self.grace],
        )
        return Verification(
            id=verification_id,
            mobile=_mask(mobile),
            expires_at=float(expires_at),
            replaced_task_id=replaced.decode() or None,
        )

    def attach_task(self, mobile: str, verification_id: str, task_id: str) -> bool:
        """Record the task sending the code of ``verification_id``; False if that verification is gone or replaced."""
        return bool(self._attach(keys=[self._key(mobile)], args=[verification_id, task_id]))

    def check(self, mobile: str, code: str) -> CheckResult:
        """Check ``code`` against the pending verification of ``mobile``, counting a wrong one.

        Constant-time with respect to the code: the candidate's HMAC is computed here and the
        script compares it with the stored one. An attacker cannot choose the HMAC of a guess
        (that takes the secret), so no guess can be steered to share a longer prefix with the
        stored HMAC, and Lua interns every string, so ``==`` is a pointer comparison anyway.
        """
        if not isinstance(code, str) or not _CODE.fullmatch(code):
            raise ValueError("code: must be 4 to 6 ASCII digits")
        status, attempts_left = self._check(
            keys=[self._key(mobile)],
            args=[self._digest(mobile, code), self.max_attempts],
        )
        return CheckResult(cast(CheckStatus, status.decode()), int(attempts_left))

    def _key(self, mobile: str) -> str:
        number = hmac.new(self._secret, b"number\0" + mobile.encode(), hashlib.sha256).hexdigest()[:32]
        return self.prefix + number

    def _digest(self, mobile: str, code: str) -> str:
        return hmac.new(self._secret, f"{mobile}:{code}".encode(), hashlib.sha256).hexdigest()


def new_code(length: int = 6) -> str:
    """A random code of ``length`` (4 to 6) digits, for a new verification."""
    if not 4 <= length <= 6:
        raise ValueError(f"length: must be from 4 to 6, got {length}")
    return f"{secrets.randbelow(10**length):0{length}d}"


def _mask(mobile: str) -> str:
    """``13800138000`` -> ``138****8000``; anything too short to mask safely -> ``****``."""
    return f"{mobile[:3]}****{mobile[-4:]}" if len(mobile) >= 11 else "****"
