local t = redis.call('TIME')
redis.call('HSET', KEYS[1], 'balance', ARGV[1],
           'balance_at', t[1] .. '.' .. string.format('%06d', tonumber(t[2])))
