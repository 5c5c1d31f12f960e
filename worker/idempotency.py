"""One record per ``request_id`` in the shared Redis: deadline, attempts, lease and outcome.

Every decision is one atomic script on the Redis server's clock, so a redelivered or
re-enqueued request, on any worker, sees what the others did:

- ``begin`` when a delivery starts: a finished request answers ``done`` (with its stored
  result), one another attempt holds answers ``busy``, one past its deadline ``expired``;
  otherwise the attempt is counted and leased to the caller under a fresh token.
- ``claim`` right before the Submit: the caller still holds the lease and the code's
  deadline has not passed; the lease is renewed for the whole Submit.
- ``finish`` stores the final result (never over an accepted Submit); ``release`` gives
  the lease back for a retry, only while the caller still holds it.

The lease outlasts the longest possible Submit attempt (the ihuyi client's total
deadline), so a redelivery cannot overlap a live attempt. The deadline is the time the
request was enqueued (or first seen, for producers that do not say) plus its TTL, so
neither retries nor redeliveries stretch a code's validity. A task parked for a rate-limit
slot leaves its slot in the record, where only the next attempt at this request finds it.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

import redis

KEY_PREFIX = "voicecode:request:"

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# ARGV: ttl, enqueued_at ('' when unknown), lease seconds, keep seconds, token.
_BEGIN = _NOW + """
local key = KEYS[1]
local status = redis.call('HGET', key, 'status')
if status == 'submitted' or status == 'dead_lettered' or status == 'expired' then
  return {'done', redis.call('HGET', key, 'result')}
end
if status == 'inflight' then
  local lease = tonumber(redis.call('HGET', key, 'lease'))
  if lease and lease > now then return {'busy', tostring(lease - now)} end
end
local first_seen = redis.call('HGET', key, 'first_seen')
if not first_seen then
  first_seen = ARGV[2] ~= '' and ARGV[2] or tostring(now)
  redis.call('HSET', key, 'first_seen', first_seen)
end
redis.call('EXPIRE', key, ARGV[4])
local deadline = tonumber(first_seen) + tonumber(ARGV[1])
redis.call('HSET', key, 'deadline', tostring(deadline))
local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
if now >= deadline then
  return {'expired', tostring(now), tostring(deadline), tostring(attempts),
          redis.call('HGET', key, 'first_attempt') or '', redis.call('HGET', key, 'last_attempt') or ''}
end
attempts = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSETNX', key, 'first_attempt', tostring(now))
redis.call('HSET', key, 'status', 'inflight', 'owner', ARGV[5], 'lease', tostring(now + tonumber(ARGV[3])),
           'last_attempt', tostring(now))
local slot = redis.call('HMGET', key, 'slot_account', 'slot_at')
redis.call('HDEL', key, 'slot_account', 'slot_at')
return {'go', tostring(now), tostring(deadline), tostring(attempts),
        redis.call('HGET', key, 'first_attempt'), tostring(now), slot[1] or '', slot[2] or ''}
"""

# ARGV: token, lease seconds. Returns {'go', seconds to the deadline}, {'expired'} or {'lost'}.
_CLAIM = _NOW + """
local key = KEYS[1]
local status, owner, deadline = unpack(redis.call('HMGET', key, 'status', 'owner', 'deadline'))
if status ~= 'inflight' or owner ~= ARGV[1] then return {'lost'} end
deadline = tonumber(deadline)
if now >= deadline then return {'expired'} end
redis.call('HSET', key, 'lease', tostring(now + tonumber(ARGV[2])))
return {'go', tostring(deadline - now)}
"""

# ARGV: token, '1' when the attempt may have reached ihuyi, slot account and time ('' for none).
_RELEASE = """
local key = KEYS[1]
local status, owner = unpack(redis.call('HMGET', key, 'status', 'owner'))
if status ~= 'inflight' or owner ~= ARGV[1] then return 0 end
redis.call('HSET', key, 'status', 'retrying')
if ARGV[2] ~= '1' then redis.call('HINCRBY', key, 'attempts', -1) end
if ARGV[3] ~= '' then redis.call('HSET', key, 'slot_account', ARGV[3], 'slot_at', ARGV[4]) end
return 1
"""

# ARGV: status, result JSON. An accepted Submit is never overwritten: returns its result then.
_FINISH = """
local key = KEYS[1]
if redis.call('HGET', key, 'status') == 'submitted' and ARGV[1] ~= 'submitted' then
  return redis.call('HGET', key, 'result')
end
redis.call('HSET', key, 'status', ARGV[1], 'result', ARGV[2])
redis.call('HDEL', key, 'lease', 'owner')
return false
"""


@dataclass(frozen=True)
class Slot:
    """A rate-limit slot on ``account`` reserved for ``at`` (epoch) before the task was parked."""

    account: str
    at: float


@dataclass(frozen=True)
class Attempt:
    """What ``begin`` decided. ``state`` is ``go``, ``done``, ``busy`` or ``expired``."""

    state: str
    now: float = 0.0
    deadline: float = 0.0
    attempts: int = 0
    first_attempt: float | None = None
    last_attempt: float | None = None
    result: dict[str, Any] | None = None
    wait: float = 0.0
    token: str = ""
    slot: Slot | None = None


@dataclass(frozen=True)
class Claim:
    """What ``claim`` decided: ``go`` (with ``remaining`` seconds to the deadline), ``expired`` or ``lost``."""

    state: str
    remaining: float = 0.0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class IdempotencyStore:
    def __init__(self, client: redis.Redis, *, lease_seconds: float, keep_seconds: int = 86400) -> None:
        self._redis = client
        self._begin = client.register_script(_BEGIN)
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)
        self._finish = client.register_script(_FINISH)
        self.lease_seconds = lease_seconds
        self.keep_seconds = keep_seconds

    def begin(self, request_id: str, ttl: int, enqueued_at: float | None = None) -> Attempt:
        keep = max(self.keep_seconds, ttl)
        token = secrets.token_hex(8)
        reply = [_text(r) for r in self._begin(
            keys=[KEY_PREFIX + request_id],
            args=[ttl, "" if enqueued_at is None else repr(float(enqueued_at)), self.lease_seconds, keep, token],
        )]
        state = reply[0]
        if state == "done":
            return Attempt("done", result=json.loads(reply[1]))
        if state == "busy":
            return Attempt("busy", wait=float(reply[1]))
        now, deadline, attempts, first, last = reply[1:6]
        slot_account, slot_at = reply[6:8] if state == "go" else ("", "")
        return Attempt(
            state, float(now), float(deadline), int(attempts),
            float(first) if first else None, float(last) if last else None,
            token=token if state == "go" else "",
            slot=Slot(slot_account, float(slot_at)) if slot_account else None,
        )

    def claim(self, request_id: str, attempt: Attempt) -> Claim:
        """Right before a Submit: still ours and not past the deadline? Renews the lease if so."""
        reply = [_text(r) for r in self._claim(keys=[KEY_PREFIX + request_id],
                                              args=[attempt.token, self.lease_seconds])]
        return Claim(reply[0], float(reply[1]) if reply[0] == "go" else 0.0)

    def finish(self, request_id: str, result: dict[str, Any]) -> dict[str, Any] | None:
        """Store the final result; later ``begin`` calls for this id answer ``done``.

        Returns None, or the stored result of an accepted Submit that ``result`` would have replaced.
        """
        kept = self._finish(keys=[KEY_PREFIX + request_id], args=[result["status"], json.dumps(result)])
        return None if kept is None else json.loads(kept)

    def release(self, request_id: str, attempt: Attempt, *, sent: bool, slot: Slot | None = None) -> bool:
        """Give the lease back so a retry may go; False if this attempt no longer held it.

        An attempt that cannot have reached ihuyi (``sent`` False) is not counted; ``slot`` is
        left for the parked copy of the task.
        """
        return bool(self._release(
            keys=[KEY_PREFIX + request_id],
            args=[attempt.token, "1" if sent else "0", slot.account if slot else "", repr(slot.at) if slot else ""],
        ))

    def forget(self, request_id: str) -> None:
        """Drop a finished request's outcome (not its deadline), so a replay may send it."""
        self._redis.hdel(KEY_PREFIX + request_id, "status", "result", "lease", "owner")
