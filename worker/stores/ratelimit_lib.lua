-- The account's GCRA, as functions for the gate's scripts (gate*.lua); its tests run them one at a time.
-- ``key`` holds the account's theoretical arrival time (TAT); a slot is reserved by moving it
-- on by ``interval``, and a caller may go ``tau`` before it (the burst).

-- Set the TAT on ``key`` to ``tat``, kept until the account is idle; returns it as stored: the
-- reservation's ticket.
local function rate_set(now, key, tat)
  local ticket = string.format('%.6f', tat)
  redis.call('SET', key, ticket, 'PX', math.ceil((tat - now) * 1000) + 1000)
  return ticket
end

-- Reserve the next slot on ``key`` if it is at most ``max_wait`` seconds away: returns 1, the
-- seconds to wait (0: now) and the reservation's ticket; or 0, the seconds to the earliest
-- slot and '' (nothing reserved).
local function rate_reserve(now, key, interval, tau, max_wait)
  local tat = tonumber(redis.call('GET', key) or '0')
  if tat < now then tat = now end
  local wait = tat - tau - now
  if wait > max_wait then return 0, wait, '' end
  local ticket = rate_set(now, key, tat + interval)
  if wait < 0 then wait = 0 end
  return 1, wait, ticket
end

-- A slot used later than it was reserved for, by the caller holding its ``ticket`` ('' for
-- none known). If nothing was reserved after it (the TAT is still its ticket), the
-- reservation moves to now: as if it had been asked for now, which the GCRA allows, since
-- now is past its slot; nothing is lost. Otherwise the later reservations count on it having
-- gone at its time: the caller reserves anew, after them, and the missed slot goes unused.
-- However many are late together, they so go at the rate from now on, never in one burst.
-- Returns as rate_reserve.
local function rate_use_late(now, key, interval, tau, ticket, max_wait)
  if ticket ~= '' and redis.call('GET', key) == ticket then
    local before = tonumber(ticket) - interval
    return 1, 0, rate_set(now, key, math.max(before, now) + interval)
  end
  return rate_reserve(now, key, interval, tau, max_wait)
end
