-- ARGV: status, result JSON. An accepted Submit is never overwritten: returns its result then.
local key = KEYS[1]
if redis.call('HGET', key, 'status') == 'submitted' and ARGV[1] ~= 'submitted' then
  return redis.call('HGET', key, 'result')
end
redis.call('HSET', key, 'status', ARGV[1], 'result', ARGV[2])
redis.call('HDEL', key, 'lease', 'owner', 'holder')
return false
