--! now
-- KEYS: expiries, accounts, known, limits (as for announce). ARGV: how long an account stays known.
-- Returns {the account lists of the live workers (JSON each), the accounts still known (JSON),
-- the workers' limits (JSON, or false)}.
local live = redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. string.format('%.6f', now), '+inf')
local lists = {}
if #live > 0 then lists = redis.call('HMGET', KEYS[2], unpack(live)) end
local known = redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. string.format('%.6f', now - tonumber(ARGV[1])), '+inf')
return {lists, cjson.encode(known), redis.call('GET', KEYS[4])}
