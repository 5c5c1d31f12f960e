--! now
-- ARGV: the candidate code's digest, max attempts. Returns {status, attempts left}.
local key = KEYS[1]
local digest, attempts, expires_at = unpack(redis.call('HMGET', key, 'digest', 'attempts', 'expires_at'))
if not digest then return {'not_found', 0} end
if now >= tonumber(expires_at) then return {'expired', 0} end
local max = tonumber(ARGV[2])
if tonumber(attempts) >= max then return {'locked', 0} end
if digest == ARGV[1] then
  redis.call('DEL', key)
  return {'approved', 0}
end
return {'rejected', max - redis.call('HINCRBY', key, 'attempts', 1)}
