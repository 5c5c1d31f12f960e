--! now
-- KEYS: expiries (sorted set: worker -> expiry), accounts (hash: worker -> JSON list).
-- ARGV: worker name, its accounts, ttl seconds. Drops the workers that have expired on the way.
local expiries, accounts = KEYS[1], KEYS[2]
local gone = redis.call('ZRANGEBYSCORE', expiries, '-inf', string.format('%.6f', now))
if #gone > 0 then
  redis.call('ZREM', expiries, unpack(gone))
  redis.call('HDEL', accounts, unpack(gone))
end
redis.call('ZADD', expiries, string.format('%.6f', now + tonumber(ARGV[3])), ARGV[1])
redis.call('HSET', accounts, ARGV[1], ARGV[2])
-- Both keys vanish with the last live worker, should no one ever announce again.
local last = redis.call('ZRANGE', expiries, -1, -1, 'WITHSCORES')
local at = string.format('%d', math.ceil(tonumber(last[2]) * 1000))
redis.call('PEXPIREAT', expiries, at)
redis.call('PEXPIREAT', accounts, at)
return 1
