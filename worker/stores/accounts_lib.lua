-- The rules of an account's pauses, as functions for accounts_*.lua and the gate's scripts (gate*.lua).
-- An account's hash holds the pool's pause (paused_code, paused_msg, paused_since) and each
-- host's (the same fields ending '@<host>'); ``suffix`` is '@<host>', or '' for the pool alone.

-- Pause the account in ``key`` (for the pool, or on one host) unless it already is there,
-- keeping the first pause's reason; stamped ``now``. Returns 1 when this call paused it, else 0.
local function account_pause(now, key, code, msg, suffix)
  if redis.call('HEXISTS', key, 'paused_code' .. suffix) == 1 then return 0 end
  redis.call('HSET', key, 'paused_code' .. suffix, code, 'paused_msg' .. suffix, msg,
             'paused_since' .. suffix, string.format('%.6f', now))
  return 1
end

-- The pause that stops the account in ``key`` sending from the host of ``suffix``: the pool's
-- first, else that host's; as {code, msg, since, suffix of the pause ('' for the pool's)}, or
-- nil when the account may send from there.
local function account_paused(key, suffix)
  local f = redis.call('HMGET', key, 'paused_code', 'paused_msg', 'paused_since',
                       'paused_code' .. suffix, 'paused_msg' .. suffix, 'paused_since' .. suffix)
  if f[1] then return {f[1], f[2] or '', f[3] or '0', ''} end
  if suffix ~= '' and f[4] then return {f[4], f[5] or '', f[6] or '0', suffix} end
  return nil
end

-- Whether the caller is the one to probe ``pause`` (an account_paused reply) with a GetNum
-- from its host: only a host's pause (never the pool's, which beat's task probes), once it
-- is ``every`` seconds old, and once per ``every`` seconds: ``lock_key`` says when one did.
local function account_claim_probe(now, pause, lock_key, every)
  if not pause or pause[4] == '' or now - tonumber(pause[3]) < every then return false end
  return redis.call('SET', lock_key, '1', 'NX', 'PX', math.ceil(every * 1000)) ~= false
end
