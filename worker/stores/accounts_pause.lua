-- ARGV: code, msg, and '' for the pool or '@<host>' for one host's pause.
-- Pause only if not paused already there (keeping the first pause's reason), stamped with server time.
local suffix = ARGV[3]
if redis.call('HEXISTS', KEYS[1], 'paused_code' .. suffix) == 1 then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'paused_code' .. suffix, ARGV[1], 'paused_msg' .. suffix, ARGV[2],
           'paused_since' .. suffix, t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return 1
