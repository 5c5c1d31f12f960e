-- Everything a send checks before its Submit, in one step (worker/stores/gate.py).
-- KEYS: 1 the request's record, 2 the account's hash, 3 its fallback's hash, 4 the number's
-- log, 5 its block, 6 the account's rate key, 7 the fallback's rate key.
-- ARGV: 1-8 as idempotency_begin's, after now and the key; 9 the account, 10 its fallback
-- ('' for none), 11 '@<host>', 12 seconds between probes of a host's pause, 13 the throttle
-- member, 14 the longest wait to hold in the worker, 15 how late a parked slot may be used,
-- 16-17 the account's interval and tau, 18-19 the fallback's, 20- the throttle windows.
-- Returns begin's reply unless it said 'go'; else {verdict, account, seconds, now, deadline,
-- attempts, first attempt, last attempt}, the verdict one of:
--   go        send on account after seconds (a new slot; the number's call counted);
--   slot      send on account after seconds (the slot the parked task reserved);
--   park      seconds to the slot reserved on account, kept in the record; the lease given back;
--   throttled seconds until the number may be called (nothing counted);
--   late      no slot before the deadline, seconds to the earliest (nothing counted);
--   paused    the account is paused here with no fallback to use, or a pause of this host
--             is due for a probe: the caller takes the slow way (worker/sending/flow.py).
--! now
--! include idempotency_lib
--! include throttle_lib
--! include ratelimit_lib

local request = KEYS[1]
local begun = idempotency_begin(now, request, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
if begun[1] ~= 'go' then return begun end
local deadline = tonumber(begun[3])
local function answer(verdict, account, seconds)
  return {verdict, account, tostring(seconds), begun[2], begun[3], begun[4], begun[5], begun[6]}
end

local account, rate_key, interval, tau = ARGV[9], KEYS[6], tonumber(ARGV[16]), tonumber(ARGV[17])
local suffix = ARGV[11]
local pool, here, since = unpack(redis.call('HMGET', KEYS[2], 'paused_code', 'paused_code' .. suffix,
                                            'paused_since' .. suffix))
if pool or here then
  local usable = false
  if ARGV[10] ~= '' then
    local fallback_pool, fallback_here = unpack(redis.call('HMGET', KEYS[3], 'paused_code', 'paused_code' .. suffix))
    usable = not fallback_pool and not fallback_here
  end
  local probe_due = not pool and now - tonumber(since) >= tonumber(ARGV[12])
  if probe_due or not usable then return answer('paused', account, 0) end
  account, rate_key, interval, tau = ARGV[10], KEYS[7], tonumber(ARGV[18]), tonumber(ARGV[19])
end

local max_hold = tonumber(ARGV[14])
local slot_account, slot_at = begun[7], tonumber(begun[8])
if slot_account == account and slot_at and slot_at - now >= -tonumber(ARGV[15]) then
  local wait = slot_at - now
  if wait <= max_hold then return answer('slot', account, math.max(wait, 0)) end
  idempotency_release(now, request, ARGV[5], '0', account, wait)
  return answer('park', account, wait)
end

local windows = numbers_from(20)
local retry = throttle_retry_after(now, KEYS[4], KEYS[5], ARGV[13], windows)
if retry > 0 then return answer('throttled', account, retry) end
local granted, wait = rate_reserve(now, rate_key, interval, tau, deadline - now)
if granted == 0 then return answer('late', account, wait) end
throttle_record(now, KEYS[4], ARGV[13], windows)
if wait > max_hold then
  idempotency_release(now, request, ARGV[5], '0', account, wait)
  return answer('park', account, wait)
end
return answer('go', account, wait)
