-- Returns id1, message1, id2, message2, ... for up to ARGV[1] due entries, each now leased,
-- then the seconds until the earliest entry left is due ('' when none is left).
--! now
--! include parking_lib
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.6f', now), 'LIMIT', 0, tonumber(ARGV[1]))
local until_ = string.format('%.6f', now + tonumber(ARGV[2]))
local taken = {}
for _, id in ipairs(ids) do
  local message = redis.call('HGET', KEYS[2], id)
  if message then
    redis.call('ZADD', KEYS[1], 'XX', until_, id)
    taken[#taken + 1] = id
    taken[#taken + 1] = message
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
taken[#taken + 1] = parking_next_due_in(now, KEYS[1])
return taken
