-- KEYS: the account's hash, the host's probe lock. ARGV: '@<host>', seconds between probes.
-- 1 when the caller may probe now: the host's pause is at least that old and no probe of it
-- ran in that time (the lock, taken here, says when one did).
--! now
local since = tonumber(redis.call('HGET', KEYS[1], 'paused_since' .. ARGV[1]))
local every = tonumber(ARGV[2])
if not since or now - since < every then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', math.ceil(every * 1000)) then return 1 end
return 0
