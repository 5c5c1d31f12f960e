-- ARGV: token, lease seconds. Returns {'go', seconds to the deadline}, {'expired'} or {'lost'}.
--! now

local key = KEYS[1]
local status, owner, deadline = unpack(redis.call('HMGET', key, 'status', 'owner', 'deadline'))
if status ~= 'inflight' or owner ~= ARGV[1] then return {'lost'} end
deadline = tonumber(deadline)
if now >= deadline then return {'expired'} end
redis.call('HSET', key, 'lease', tostring(now + tonumber(ARGV[2])))
return {'go', tostring(deadline - now)}
