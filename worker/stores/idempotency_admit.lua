-- A request that did not come through the door (sent by task name): its door limits checked and
-- counted on its first delivery (door_lib.lua), once; the number's throttle is the gate's.
-- KEYS: the request's record, the fingerprint key's key, then door_lib.lua's seven keys.
-- ARGV: the caller's fingerprint key, keep seconds, the request's throttle member, door_lib's
-- budget to block seconds (7), then the requester's windows (limit, seconds, ...).
-- Returns {'rekey', the pool's key}, {'admitted'}, {'throttled', seconds, 'requester' | 'range'}
-- or {'over_budget', budget}.
--! now
--! include idempotency_lib
--! include throttle_lib
--! include door_lib
local record = KEYS[1]
local other = idempotency_other_key(KEYS[2], ARGV[1])
if other then return {'rekey', other} end
if redis.call('HGET', record, 'admitted') then return {'admitted'} end
local requester_windows = {}
for i = 11, #ARGV do requester_windows[#requester_windows + 1] = tonumber(ARGV[i]) end
local refused = door_admit(now, {KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]},
                           {ARGV[3], requester_windows, tonumber(ARGV[4]), ARGV[5], ARGV[6], ARGV[7],
                            tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])})
if refused then return refused end
redis.call('HSET', record, 'admitted', '1')
redis.call('EXPIRE', record, ARGV[2])
return {'admitted'}
