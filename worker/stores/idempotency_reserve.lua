-- A new request accepted at the door: its record made and counted against every limit, in one step.
-- KEYS: the request's record, the fingerprint key's key, the number's throttle log, its block,
-- then door_lib.lua's seven keys.
-- ARGV: the caller's fingerprint key, the request's fingerprint as asked, the message's
-- fingerprint, task id, keep seconds, the request's throttle member, then door_lib's budget,
-- account, range, range member, range limit, range seconds and block seconds, how many numbers
-- the number's windows take, then the number's windows and the requester's (limit, seconds, ...).
-- Returns {'rekey', the pool's key}, {'conflict'}, {'existing', its task id}, {'new', task id},
-- {'throttled', seconds to wait, 'number' | 'requester' | 'range'} or {'over_budget', budget}.
--! now
--! include idempotency_lib
--! include throttle_lib
--! include door_lib
local record = KEYS[1]
local other = idempotency_other_key(KEYS[2], ARGV[1])
if other then return {'rekey', other} end
local asked, message, task_id = unpack(redis.call('HMGET', record, 'asked', 'message', 'task_id'))
if asked or message then
  if (asked or message) ~= ARGV[2] then return {'conflict'} end
  return {'existing', task_id or ''}
end
local member, split = ARGV[6], 14 + tonumber(ARGV[14])
local windows, requester_windows = {}, {}
for i = 15, #ARGV do
  if i <= split then windows[#windows + 1] = tonumber(ARGV[i]) else requester_windows[#requester_windows + 1] = tonumber(ARGV[i]) end
end
local retry = throttle_retry_after(now, KEYS[3], KEYS[4], member, windows)
if retry > 0 then return {'throttled', tostring(retry), 'number'} end
local refused = door_admit(now, {KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]},
                           {member, requester_windows, tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10],
                            tonumber(ARGV[11]), tonumber(ARGV[12]), tonumber(ARGV[13])})
if refused then return refused end
throttle_record(now, KEYS[3], member, windows)
redis.call('HSET', record, 'asked', ARGV[2], 'message', ARGV[3], 'task_id', ARGV[4], 'first_seen', tostring(now),
           'admitted', '1')
redis.call('EXPIRE', record, ARGV[5])
return {'new', ARGV[4]}
