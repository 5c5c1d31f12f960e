-- KEYS: the number's log, its block (set by ihuyi refusing the number: throttle_block.lua).
-- ARGV: record ('1' or '0'), the member for this call, then limit, seconds per window.
-- Returns the seconds left of a block if the number is blocked; else '0' when a call now is
-- within every window (recorded if asked) or this member was already counted, else the
-- seconds until it would be: for each full window, until enough of its oldest calls have left it.
--! now
local key = KEYS[1]
local blocked = redis.call('PTTL', KEYS[2])
if blocked > 0 then return tostring(blocked / 1000) end
if redis.call('ZSCORE', key, ARGV[2]) then return '0' end
local longest = 0
local retry = 0
for i = 3, #ARGV, 2 do
  local limit, seconds = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  if seconds > longest then longest = seconds end
  local since = '(' .. string.format('%.6f', now - seconds)
  local excess = redis.call('ZCOUNT', key, since, '+inf') - limit
  if excess >= 0 then
    local leaving = redis.call('ZRANGEBYSCORE', key, since, '+inf', 'WITHSCORES', 'LIMIT', excess, 1)
    local wait = tonumber(leaving[2]) + seconds - now
    if wait > retry then retry = wait end
  end
end
if retry > 0 then return tostring(retry) end
if ARGV[1] == '1' and longest > 0 then
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%.6f', now - longest))
  redis.call('ZADD', key, string.format('%.6f', now), ARGV[2])
  redis.call('PEXPIRE', key, longest * 1000 + 1000)
end
return '0'
