-- ARGV: ttl, enqueued_at ('' when unknown), lease seconds, keep seconds, token,
-- holder (the caller's process identity, '' for none), heartbeat key prefix, heartbeat ms.
-- A lease whose holder's heartbeat is gone counts as run out: that process is dead. The
-- caller is alive, so its own heartbeat is made here should Redis have lost it (a restart,
-- a flush): a lease never names a holder without one.
--! now

local key = KEYS[1]
local status = redis.call('HGET', key, 'status')
if status == 'submitted' or status == 'dead_lettered' or status == 'expired' then
  return {'done', redis.call('HGET', key, 'result')}
end
if status == 'inflight' then
  local lease, holder = unpack(redis.call('HMGET', key, 'lease', 'holder'))
  lease = tonumber(lease)
  if lease and lease > now and (not holder or holder == '' or redis.call('EXISTS', ARGV[7] .. holder) == 1) then
    return {'busy', tostring(lease - now)}
  end
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
if ARGV[6] ~= '' then redis.call('SET', ARGV[7] .. ARGV[6], '1', 'PX', ARGV[8], 'NX') end
redis.call('HSET', key, 'status', 'inflight', 'owner', ARGV[5], 'holder', ARGV[6],
           'lease', tostring(now + tonumber(ARGV[3])), 'last_attempt', tostring(now))
local slot = redis.call('HMGET', key, 'slot_account', 'slot_at')
redis.call('HDEL', key, 'slot_account', 'slot_at')
return {'go', tostring(now), tostring(deadline), tostring(attempts),
        redis.call('HGET', key, 'first_attempt'), tostring(now), slot[1] or '', slot[2] or ''}
