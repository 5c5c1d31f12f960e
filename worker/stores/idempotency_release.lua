-- ARGV: token, '1' when the attempt may have reached ihuyi, slot account and time ('' for none).
local key = KEYS[1]
local status, owner = unpack(redis.call('HMGET', key, 'status', 'owner'))
if status ~= 'inflight' or owner ~= ARGV[1] then return 0 end
redis.call('HSET', key, 'status', 'retrying')
if ARGV[2] ~= '1' then redis.call('HINCRBY', key, 'attempts', -1) end
if ARGV[3] ~= '' then redis.call('HSET', key, 'slot_account', ARGV[3], 'slot_at', ARGV[4]) end
return 1
