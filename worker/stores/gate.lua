-- Everything a send decides before its Submit, in one step (worker/stores/gate.py).
-- KEYS: 1 the request's record, 2 the account's hash, 3 its fallback's hash, 4 the number's
-- log, 5 its block, 6 the account's rate key, 7 the fallback's rate key, 8 the lock of this
-- host's probe of the account; then, for a request sent by task name that names who asks,
-- door_lib.lua's seven keys.
-- ARGV: 1 to BEGIN_ARGS as idempotency_begin's, after now and the key; then, from there on:
-- 1 the account, 2 its fallback ('' for none), 3 '@<host>', 4 seconds between probes of a
-- host's pause, 5 the throttle member, 6 the longest wait to hold in the worker, 7 how late a
-- parked slot may be used, 8-9 the hand-back window and delay (gate_lib.lua), 10-11 the
-- account's interval and tau, 12-13 the fallback's, 14 how many numbers the throttle windows
-- take, then the throttle windows; with door keys, door_lib's budget to block seconds (7) and
-- the requester's windows.
-- Returns begin's reply unless it said 'go'; else {verdict, account, seconds, now, deadline,
-- attempts, first attempt, last attempt, ticket, pause code, msg, since, suffix, limit}, the
-- verdict one of:
--   refused   the door's limits refuse a request not admitted before (sent by task name): limit
--             'requester' or 'range' for seconds, or 'budget'; the lease given back (not counted);
--   go        send on account after seconds (a new slot, its ticket; the number's call counted);
--   slot      send on account after seconds (the slot the parked task reserved);
--   park      seconds to the slot reserved on account, kept in the record; the lease given back;
--   throttled seconds until the number may be called (nothing counted);
--   late      no slot before the deadline, seconds to the earliest (nothing counted);
--   probe     the account is paused on this host and the caller won the claim to probe it:
--             a GetNum from this host, then enter again; the lease given back (not counted);
--   hand_back the account is paused on this host, no fallback to use, within the hand-back
--             window: back to the queue for another host after seconds; the lease given back
--             (not counted);
--   paused    the account is paused (for the pool, or on this host past the hand-back
--             window), no fallback to use: the caller dead-letters it, nothing sent.
-- The last three come with the pause of the account (accounts_lib.lua's account_paused).
--! now
--! include idempotency_lib
--! include accounts_lib
--! include throttle_lib
--! include ratelimit_lib
--! include door_lib
--! include gate_lib

local BEGIN_ARGS, token = 12, ARGV[5]  -- how many of ARGV are begin's, and its lease's token
local function arg(i) return ARGV[BEGIN_ARGS + i] end
local request = KEYS[1]
local begun = idempotency_begin(now, request, unpack(ARGV, 1, BEGIN_ARGS))
if begun[1] ~= 'go' then return begun end
local deadline = tonumber(begun[3])
local function answer(verdict, account, seconds, ticket, pause, limit)
  pause = pause or {'', '', '', ''}
  return {verdict, account, tostring(seconds), begun[2], begun[3], begun[4], begun[5], begun[6], ticket or '',
          pause[1], pause[2], pause[3], pause[4], limit or ''}
end

local account, fallback, suffix = arg(1), arg(2), arg(3)
local split = BEGIN_ARGS + 14 + tonumber(arg(14))
local windows = {}
for i = BEGIN_ARGS + 15, split do windows[#windows + 1] = tonumber(ARGV[i]) end

-- A request sent by task name meets the door here, on its first delivery (one through a
-- producer was admitted when it was reserved).
if #KEYS > 8 and not redis.call('HGET', request, 'admitted') then
  local requester_windows = {}
  for i = split + 8, #ARGV do requester_windows[#requester_windows + 1] = tonumber(ARGV[i]) end
  local refused = door_admit(now, {unpack(KEYS, 9, 15)},
                             {arg(5), requester_windows, tonumber(ARGV[split + 1]), ARGV[split + 2], ARGV[split + 3],
                              ARGV[split + 4], tonumber(ARGV[split + 5]), tonumber(ARGV[split + 6]),
                              tonumber(ARGV[split + 7])})
  if refused then
    idempotency_release(now, request, token, '0', '', 0)
    if refused[1] == 'over_budget' then return answer('refused', account, 0, '', nil, 'budget') end
    return answer('refused', account, refused[2], '', nil, refused[3])
  end
  redis.call('HSET', request, 'admitted', '1')
end

local rate_key, interval, tau = KEYS[6], tonumber(arg(10)), tonumber(arg(11))
local pause = account_paused(KEYS[2], suffix)
if pause then
  if account_claim_probe(now, pause, KEYS[8], tonumber(arg(4))) then
    idempotency_release(now, request, token, '0', '', 0)
    return answer('probe', account, 0, '', pause)
  end
  if fallback == '' or account_paused(KEYS[3], suffix) then
    local delay = tonumber(arg(9))
    -- begin's now and first attempt, written alike (a first attempt now is not after now)
    if pause[4] ~= '' and may_hand_back(tonumber(begun[2]), tonumber(begun[5]), deadline, tonumber(arg(8)), delay) then
      idempotency_release(now, request, token, '0', '', 0)
      return answer('hand_back', account, delay, '', pause)
    end
    return answer('paused', account, 0, '', pause)
  end
  account, rate_key, interval, tau = fallback, KEYS[7], tonumber(arg(12)), tonumber(arg(13))
end

local max_hold = tonumber(arg(6))
local slot_account, slot_at = begun[7], tonumber(begun[8])
if slot_account == account and slot_at and slot_at - now >= -tonumber(arg(7)) then
  local verdict = take_slot(now, request, token, account, 1, slot_at - now, max_hold)
  return answer(verdict == 'go' and 'slot' or verdict, account, math.max(slot_at - now, 0))
end

local retry = throttle_retry_after(now, KEYS[4], KEYS[5], arg(5), windows)
if retry > 0 then return answer('throttled', account, retry) end
local granted, wait, ticket = rate_reserve(now, rate_key, interval, tau, deadline - now)
if granted == 1 then throttle_record(now, KEYS[4], arg(5), windows) end
return answer(take_slot(now, request, token, account, granted, wait, max_hold), account, wait, ticket)
