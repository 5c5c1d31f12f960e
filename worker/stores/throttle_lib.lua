-- The per-number throttle's decisions, as functions for the door (idempotency_reserve.lua) and gate.lua.
-- log_key is the number's log, block_key its block (set by ihuyi refusing the number:
-- throttle_block.lua); windows a list {limit, seconds, limit, seconds, ...} of numbers.

-- Seconds left of the number's block, if it is blocked; else 0 when a call now is within
-- every window or ``member`` was already counted, else the seconds until it would be: for
-- each full window, until enough of its oldest calls have left it.
local function throttle_retry_after(now, log_key, block_key, member, windows)
  local blocked = redis.call('PTTL', block_key)
  if blocked > 0 then return blocked / 1000 end
  if redis.call('ZSCORE', log_key, member) then return 0 end
  local retry = 0
  for i = 1, #windows, 2 do
    local limit, seconds = windows[i], windows[i + 1]
    local since = '(' .. string.format('%.6f', now - seconds)
    local excess = redis.call('ZCOUNT', log_key, since, '+inf') - limit
    if excess >= 0 then
      local leaving = redis.call('ZRANGEBYSCORE', log_key, since, '+inf', 'WITHSCORES', 'LIMIT', excess, 1)
      local wait = tonumber(leaving[2]) + seconds - now
      if wait > retry then retry = wait end
    end
  end
  return retry
end

-- Count a call by ``member`` now (once: a member already counted keeps its time).
local function throttle_record(now, log_key, member, windows)
  local longest = 0
  for i = 2, #windows, 2 do
    if windows[i] > longest then longest = windows[i] end
  end
  if longest == 0 or redis.call('ZSCORE', log_key, member) then return end
  redis.call('ZREMRANGEBYSCORE', log_key, '-inf', string.format('%.6f', now - longest))
  redis.call('ZADD', log_key, string.format('%.6f', now), member)
  redis.call('PEXPIRE', log_key, longest * 1000 + 1000)
end
