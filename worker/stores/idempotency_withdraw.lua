-- A reservation whose publish failed, given back: its record dropped and its call taken back
-- from the number's throttle, the requester's log and the account's budget for the day, so the
-- request can be asked again as if it never was. The range guard keeps the number: it counts
-- distinct numbers asked for, and asking for this one again adds none.
-- KEYS: the request's record, the number's throttle log, the requester's log ('' for none),
-- the account's budget hash. ARGV: the request's throttle member, the budget (0: none).
--! now
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if KEYS[3] ~= '' then redis.call('ZREM', KEYS[3], ARGV[1]) end
if tonumber(ARGV[2]) > 0 then
  local day, used = unpack(redis.call('HMGET', KEYS[4], 'day', 'used'))
  if tonumber(day) == math.floor(now / 86400) and tonumber(used) > 0 then
    redis.call('HINCRBY', KEYS[4], 'used', -1)
  end
end
return 1
