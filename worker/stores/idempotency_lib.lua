-- The request record's decisions, as functions for idempotency_*.lua and gate.lua.

-- The pool's key for request fingerprints, kept at ``key_key``: the caller's ``key`` becomes
-- it when none is kept (the first caller, or the first after the state Redis lost it).
-- Returns nil when the caller's key is the kept one, else the kept key, for the caller to
-- adopt and ask again: so no two processes ever compare fingerprints made with different keys.
local function idempotency_other_key(key_key, key)
  local kept = redis.call('GET', key_key)
  if not kept then
    redis.call('SET', key_key, key)
    return nil
  end
  if kept == key then return nil end
  return kept
end

-- begin(now, key, ttl, enqueued_at ('' when unknown), lease seconds, keep seconds, token,
-- holder (the caller's process identity, '' for none), heartbeat key prefix, heartbeat ms,
-- the fingerprint key's key, the caller's fingerprint key, the message's fingerprint, task id).
-- A record whose fingerprint is not ``message``'s belongs to another request (a request id
-- reused with another number, code or account): 'conflict'. A record without one (its first
-- delivery, from a producer that did not reserve it) takes this one, and ``task_id`` as its task.
-- A lease whose holder's heartbeat is gone counts as run out: that process is dead. The
-- caller is alive, so its own heartbeat is made here should Redis have lost it (a restart,
-- a flush): a lease never names a holder without one. The record is read once and written once.
-- Returns {'rekey', the pool's key} | {'conflict'} | {'done', result} | {'busy', seconds}
-- | {'expired', now, deadline, attempts, first, last}
-- | {'go', now, deadline, attempts, first, last, slot account, slot time}.
local function idempotency_begin(now, key, ttl, enqueued_at, lease, keep, token, holder, prefix, beat_ms,
                                 key_key, fingerprint_key, message, task_id)
  local other = idempotency_other_key(key_key, fingerprint_key)
  if other then return {'rekey', other} end
  local kept, kept_task, status, held, by, first_seen, attempts, first_attempt, last_attempt, slot_account, slot_at =
    unpack(redis.call('HMGET', key, 'message', 'task_id', 'status', 'lease', 'holder', 'first_seen', 'attempts',
                      'first_attempt', 'last_attempt', 'slot_account', 'slot_at'))
  if kept and kept ~= message then return {'conflict'} end
  -- What the record is given is written in one HSET at the end, whichever way it ends.
  local fields = {}
  if not kept then
    fields = {'message', message}
    if not kept_task then fields[3], fields[4] = 'task_id', task_id end
  end
  local busy
  if status == 'inflight' then
    held = tonumber(held)
    busy = held and held > now and (not by or by == '' or redis.call('EXISTS', prefix .. by) == 1)
  end
  if busy or status == 'submitted' or status == 'dead_lettered' or status == 'expired' then
    if #fields > 0 then redis.call('HSET', key, unpack(fields)) end
    if busy then return {'busy', tostring(held - now)} end
    return {'done', redis.call('HGET', key, 'result')}
  end
  if not first_seen then
    first_seen = enqueued_at ~= '' and enqueued_at or tostring(now)
    fields[#fields + 1], fields[#fields + 2] = 'first_seen', first_seen
  end
  local deadline = tonumber(first_seen) + tonumber(ttl)
  fields[#fields + 1], fields[#fields + 2] = 'deadline', tostring(deadline)
  attempts = tonumber(attempts or '0')
  if now >= deadline then
    redis.call('HSET', key, unpack(fields))
    redis.call('EXPIRE', key, keep)
    return {'expired', tostring(now), tostring(deadline), tostring(attempts), first_attempt or '', last_attempt or ''}
  end
  attempts, first_attempt = attempts + 1, first_attempt or tostring(now)
  if holder ~= '' then redis.call('SET', prefix .. holder, '1', 'PX', beat_ms, 'NX') end
  redis.call('HSET', key, 'attempts', tostring(attempts), 'first_attempt', first_attempt, 'status', 'inflight',
             'owner', token, 'holder', holder, 'lease', tostring(now + tonumber(lease)), 'last_attempt', tostring(now),
             unpack(fields))
  redis.call('EXPIRE', key, keep)
  if slot_account or slot_at then redis.call('HDEL', key, 'slot_account', 'slot_at') end
  return {'go', tostring(now), tostring(deadline), tostring(attempts), first_attempt, tostring(now),
          slot_account or '', slot_at or ''}
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
