--! now
-- ARGV: verification id, code digest, ttl, grace (seconds).
-- Returns the expiry and the task id of the verification this one replaces ('' if none).
local key = KEYS[1]
local replaced = redis.call('HGET', key, 'task_id') or ''
local ttl = tonumber(ARGV[3])
local expires_at = string.format('%.6f', now + ttl)
redis.call('DEL', key)
redis.call('HSET', key, 'id', ARGV[1], 'digest', ARGV[2], 'attempts', 0, 'expires_at', expires_at)
redis.call('EXPIRE', key, ttl + tonumber(ARGV[4]))
return {expires_at, replaced}
