-- Pause only if not paused already (keeping the first pause's reason), stamped with server time.
if redis.call('HEXISTS', KEYS[1], 'paused_code') == 1 then return 0 end
local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'paused_code', ARGV[1], 'paused_msg', ARGV[2],
           'paused_since', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
return 1
