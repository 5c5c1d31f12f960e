"""One record per ``request_id`` in the shared Redis: deadline, attempts, lease and outcome.

Every decision is one atomic script on the Redis server's clock, so a redelivered or
re-enqueued request, on any worker, sees what the others did:

- ``begin`` before a Submit: a finished request answers ``done`` (with its stored result),
  one another worker is sending answers ``busy``, one past its deadline ``expired``;
  otherwise the attempt is counted and leased to the caller.
- ``finish`` stores the final result; ``release`` gives the lease back for a retry.

The deadline is the time the request was enqueued (or first seen, for producers that do
not say) plus its TTL, so neither retries nor redeliveries stretch a code's validity.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

KEY_PREFIX = "voicecode:request:"

_BEGIN = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local key = KEYS[1]
local status = redis.call('HGET', key, 'status')
if status == 'submitted' or status == 'dead_lettered' or status == 'expired' then
  return {'done', redis.call('HGET', key, 'result')}
end
if status == 'inflight' then
  local lease = tonumber(redis.call('HGET', key, 'lease'))
  if lease > now then return {'busy', tostring(lease - now)} end
end
local first_seen = redis.call('HGET', key, 'first_seen')
if not first_seen then
  first_seen = ARGV[2] ~= '' and ARGV[2] or tostring(now)
  redis.call('HSET', key, 'first_seen', first_seen)
end
local deadline = tonumber(first_seen) + tonumber(ARGV[1])
redis.call('EXPIRE', key, ARGV[4])
local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
if now >= deadline then
  return {'expired', tostring(now), tostring(deadline), tostring(attempts),
          redis.call('HGET', key, 'first_attempt') or '', redis.call('HGET', key, 'last_attempt') or ''}
end
attempts = redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSETNX', key, 'first_attempt', tostring(now))
redis.call('HSET', key, 'status', 'inflight', 'lease', tostring(now + tonumber(ARGV[3])),
           'last_attempt', tostring(now))
return {'go', tostring(now), tostring(deadline), tostring(attempts),
        redis.call('HGET', key, 'first_attempt'), tostring(now)}
"""


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


class IdempotencyStore:
    def __init__(self, client: redis.Redis, *, lease_seconds: float, keep_seconds: int = 86400) -> None:
        self._redis = client
        self._begin = client.register_script(_BEGIN)
        self.lease_seconds = lease_seconds
        self.keep_seconds = keep_seconds

    def begin(self, request_id: str, ttl: int, enqueued_at: float | None = None) -> Attempt:
        keep = max(self.keep_seconds, ttl)
        reply = [r.decode() if isinstance(r, bytes) else r for r in self._begin(
            keys=[KEY_PREFIX + request_id],
            args=[ttl, "" if enqueued_at is None else repr(enqueued_at), self.lease_seconds, keep],
        )]
        state = reply[0]
        if state == "done":
            return Attempt("done", result=json.loads(reply[1]))
        if state == "busy":
            return Attempt("busy", wait=float(reply[1]))
        now, deadline, attempts, first, last = reply[1:6]
        return Attempt(
            state, float(now), float(deadline), int(attempts),
            float(first) if first else None, float(last) if last else None,
        )

    def finish(self, request_id: str, result: dict[str, Any]) -> None:
        """Store the final result; later ``begin`` calls for this id answer ``done``."""
        key = KEY_PREFIX + request_id
        pipe = self._redis.pipeline()
        pipe.hset(key, mapping={"status": result["status"], "result": json.dumps(result)})
        pipe.hdel(key, "lease")
        pipe.execute()

    def release(self, request_id: str, *, submitted: bool) -> None:
        """Give the lease back so a retry may go at once; an attempt that made no Submit is not counted."""
        key = KEY_PREFIX + request_id
        pipe = self._redis.pipeline()
        pipe.hset(key, "status", "retrying")
        if not submitted:
            pipe.hincrby(key, "attempts", -1)
        pipe.execute()

    def forget(self, request_id: str) -> None:
        """Drop a finished request's outcome (not its deadline), so a replay may send it."""
        key = KEY_PREFIX + request_id
        self._redis.hdel(key, "status", "result", "lease")
