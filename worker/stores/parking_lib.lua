-- The parking lot's functions, for parking_take_due.lua and parking_next_due_in.lua.

-- Seconds from ``now`` until the earliest entry in ``key`` is due (0 if overdue), as text;
-- '' when the lot is empty.
local function parking_next_due_in(now, key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if #first == 0 then return '' end
  return string.format('%.6f', math.max(tonumber(first[2]) - now, 0))
end
