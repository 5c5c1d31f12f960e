--! now
-- KEYS: expiries (sorted set: worker -> expiry), accounts (hash: worker -> JSON list), known
-- (sorted set: account -> when last announced), limits (the workers' limits, JSON).
-- ARGV: worker name, its accounts (JSON list), ttl seconds, how long an account stays known,
-- the worker's limits ('' to leave them). Drops the workers that have expired on the way.
local expiries, accounts, known = KEYS[1], KEYS[2], KEYS[3]
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
-- What the pool has served stays known while no worker is live: a restart queues, not refuses.
local stamp = string.format('%.6f', now)
for _, name in ipairs(cjson.decode(ARGV[2])) do redis.call('ZADD', known, stamp, name) end
redis.call('ZREMRANGEBYSCORE', known, '-inf', string.format('%.6f', now - tonumber(ARGV[4])))
if ARGV[5] ~= '' then redis.call('SET', KEYS[4], ARGV[5]) end
return 1
