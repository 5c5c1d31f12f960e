--! now
-- KEYS: expiries, accounts (as for announce). Returns the account lists of the live workers.
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.6f', now), '+inf')
if #live == 0 then return {} end
return redis.call('HMGET', KEYS[2], unpack(live))
