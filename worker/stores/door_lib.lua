-- The limits a new request meets at the door, besides its number's throttle, as a function for
-- idempotency_reserve.lua and, for a request sent by task name, gate.lua (worker/stores/guards.py
-- reads what they keep).
-- keys: {requester log ('' for none), the account's budget hash, the range's set of numbers,
-- the range's block, the range's trip flag, the trips to alert on, the blocked ranges}. limits: {member (the
-- request's), requester windows (a list), budget (0: none), account, range (its 7 digits),
-- range member (the number's hash), range limit (0: no guard), range seconds, block seconds}.
-- Returns nil when the request is admitted (and then counted everywhere), else
-- {'throttled', seconds, 'requester' | 'range'} or {'over_budget', budget}.
local function door_admit(now, keys, limits)
  local requester, budget_key, range_key, range_block, range_flag, trips, blocks = unpack(keys)
  local member, requester_windows, budget, account = limits[1], limits[2], limits[3], limits[4]
  local range, range_member, range_limit, range_seconds, block = limits[5], limits[6], limits[7], limits[8], limits[9]
  if requester ~= '' then
    local retry = throttle_retry_after(now, requester, requester .. ':blocked', member, requester_windows)
    if retry > 0 then return {'throttled', tostring(retry), 'requester'} end
  end
  local day = math.floor(now / 86400)
  local used = 0
  if budget > 0 then
    local counted_day, counted = unpack(redis.call('HMGET', budget_key, 'day', 'used'))
    if tonumber(counted_day) == day then used = tonumber(counted) end
    if used >= budget then
      if redis.call('HGET', budget_key, 'tripped') ~= tostring(day) then
        redis.call('HSET', budget_key, 'tripped', tostring(day))
        redis.call('ZADD', trips, 'NX', string.format('%.6f', now), 'budget:' .. account .. ':' .. budget)
      end
      return {'over_budget', tostring(budget)}
    end
  end
  if range_limit > 0 then
    local blocked = redis.call('PTTL', range_block)
    if blocked > 0 then return {'throttled', tostring(blocked / 1000), 'range'} end
    redis.call('ZREMRANGEBYSCORE', range_key, '-inf', string.format('%.6f', now - range_seconds))
    if not redis.call('ZSCORE', range_key, range_member) and redis.call('ZCARD', range_key) >= range_limit then
      if redis.call('SET', range_flag, '1', 'NX', 'PX', math.ceil(math.max(range_seconds, block) * 1000)) then
        redis.call('ZADD', trips, 'NX', string.format('%.6f', now), 'range:' .. range .. ':' .. block)
      end
      if block > 0 then
        redis.call('SET', range_block, '1', 'PX', block * 1000)
        redis.call('ZREMRANGEBYSCORE', blocks, '-inf', string.format('%.6f', now))
        redis.call('ZADD', blocks, string.format('%.6f', now + block), range)
        return {'throttled', tostring(block), 'range'}
      end
    end
  end
  if requester ~= '' then throttle_record(now, requester, member, requester_windows) end
  if budget > 0 then
    redis.call('HSET', budget_key, 'day', tostring(day), 'used', tostring(used + 1))
    redis.call('EXPIRE', budget_key, 2 * 86400)
  end
  if range_limit > 0 then
    redis.call('ZADD', range_key, string.format('%.6f', now), range_member)
    redis.call('PEXPIRE', range_key, range_seconds * 1000 + 1000)
  end
  return nil
end
