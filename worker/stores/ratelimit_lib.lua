-- The account's GCRA, as a function for ratelimit_reserve.lua and gate.lua.

-- Reserve the next slot on ``key`` if it is at most ``max_wait`` seconds away: returns
-- 1 and the seconds to wait (0: now), or 0 and the seconds to the earliest slot (nothing reserved).
local function rate_reserve(now, key, interval, tau, max_wait)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local wait = tat - tau - now
  if wait > max_wait then return 0, wait end
  local new_tat = tat + interval
  redis.call('SET', key, string.format('%.6f', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
  if wait < 0 then wait = 0 end
  return 1, wait
end
