-- KEYS: owner hash (tag -> owner), owners set, my heartbeat key, my owned set.
-- ARGV: my identity, heartbeat key prefix, owned set key prefix, the most tags to take.
-- An owner whose heartbeat key is gone is dead. Up to the limit, the tags still recorded as
-- its own become mine, so only one worker restores each, and one dying while it restores
-- leaves the rest to the next; an owner with no tag left is forgotten. Only a live worker
-- recovers: a process back from a stall has to beat again first.
-- Returns {the dead owners seen, the tags now mine}.
local owner_of, owners, my_beat, mine = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local me, beat_prefix, owned_prefix, limit = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
if redis.call('EXISTS', my_beat) == 0 then return {{}, {}} end
local dead, tags = {}, {}
for _, owner in ipairs(redis.call('SMEMBERS', owners)) do
  if #tags >= limit then break end
  if owner ~= me and redis.call('EXISTS', beat_prefix .. owner) == 0 then
    dead[#dead + 1] = owner
    local owned = owned_prefix .. owner
    for _, tag in ipairs(redis.call('SPOP', owned, limit - #tags)) do
      if redis.call('HGET', owner_of, tag) == owner then
        redis.call('HSET', owner_of, tag, me)
        redis.call('SADD', mine, tag)
        tags[#tags + 1] = tag
      end
    end
    if redis.call('SCARD', owned) == 0 then redis.call('SREM', owners, owner) end
  end
end
if #tags > 0 then redis.call('SADD', owners, me) end
return {dead, tags}
