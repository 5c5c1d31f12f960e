-- The request record's begin and release, as functions for idempotency_*.lua and gate.lua.

-- begin(now, key, ttl, enqueued_at ('' when unknown), lease seconds, keep seconds, token,
-- holder (the caller's process identity, '' for none), heartbeat key prefix, heartbeat ms).
-- A lease whose holder's heartbeat is gone counts as run out: that process is dead. The
-- caller is alive, so its own heartbeat is made here should Redis have lost it (a restart,
-- a flush): a lease never names a holder without one.
-- Returns {'done', result} | {'busy', seconds} | {'expired', now, deadline, attempts, first, last}
-- | {'go', now, deadline, attempts, first, last, slot account, slot time}.
local function idempotency_begin(now, key, ttl, enqueued_at, lease, keep, token, holder, prefix, beat_ms)
  local status = redis.call('HGET', key, 'status')
  if status == 'submitted' or status == 'dead_lettered' or status == 'expired' then
    return {'done', redis.call('HGET', key, 'result')}
  end
  if status == 'inflight' then
    local held, by = unpack(redis.call('HMGET', key, 'lease', 'holder'))
    held = tonumber(held)
    if held and held > now and (not by or by == '' or redis.call('EXISTS', prefix .. by) == 1) then
      return {'busy', tostring(held - now)}
    end
  end
  local first_seen = redis.call('HGET', key, 'first_seen')
  if not first_seen then
    first_seen = enqueued_at ~= '' and enqueued_at or tostring(now)
    redis.call('HSET', key, 'first_seen', first_seen)
  end
  redis.call('EXPIRE', key, keep)
  local deadline = tonumber(first_seen) + tonumber(ttl)
  redis.call('HSET', key, 'deadline', tostring(deadline))
  local attempts = tonumber(redis.call('HGET', key, 'attempts') or '0')
  if now >= deadline then
    return {'expired', tostring(now), tostring(deadline), tostring(attempts),
            redis.call('HGET', key, 'first_attempt') or '', redis.call('HGET', key, 'last_attempt') or ''}
  end
  attempts = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSETNX', key, 'first_attempt', tostring(now))
  if holder ~= '' then redis.call('SET', prefix .. holder, '1', 'PX', beat_ms, 'NX') end
  redis.call('HSET', key, 'status', 'inflight', 'owner', token, 'holder', holder,
             'lease', tostring(now + tonumber(lease)), 'last_attempt', tostring(now))
  local slot = redis.call('HMGET', key, 'slot_account', 'slot_at')
  redis.call('HDEL', key, 'slot_account', 'slot_at')
  return {'go', tostring(now), tostring(deadline), tostring(attempts),
          redis.call('HGET', key, 'first_attempt'), tostring(now), slot[1] or '', slot[2] or ''}
end

-- release(now, key, token, sent ('1' when the attempt may have reached ihuyi), slot account
-- ('' for none), seconds to the slot): the lease given back for a retry, only by its holder;
-- the slot kept for the parked copy of the task. Returns 1, or 0 if the caller lost the lease.
local function idempotency_release(now, key, token, sent, slot_account, slot_in)
  local status, owner = unpack(redis.call('HMGET', key, 'status', 'owner'))
  if status ~= 'inflight' or owner ~= token then return 0 end
  redis.call('HSET', key, 'status', 'retrying')
  if sent ~= '1' then redis.call('HINCRBY', key, 'attempts', -1) end
  if slot_account ~= '' then
    redis.call('HSET', key, 'slot_account', slot_account, 'slot_at', tostring(now + tonumber(slot_in)))
  end
  return 1
end
