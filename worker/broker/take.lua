-- KEYS: unacked index, unacked hash, owner hash, my owned set, owners set, my heartbeat key,
-- then each queue's lists in priority order.
-- ARGV: now, how many to take, how many lists each queue has, my identity.
-- Takes one message per queue per round, highest priority first, until enough or all empty.
-- The unacked entry has kombu's format: [message, exchange, routing key]. Each taken tag is
-- recorded as mine (owner hash and my owned set), and I among the owners, so a live worker
-- gives it back once my heartbeat is gone. Without a heartbeat nothing is taken: the others
-- may already count me dead.
local now, limit, per, me = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local function js(value)
  if value == nil then return 'null' end
  return cjson.encode(value)
end
if redis.call('EXISTS', KEYS[6]) == 0 or redis.call('EXISTS', unpack(KEYS, 7)) == 0 then return {} end
local taken, out, found, empty = 0, {}, true, {}
while taken < limit and found do
  found = false
  for first = 7, #KEYS, per do
    if taken >= limit then break end
    for key = first, first + per - 1 do
      -- A list found empty stays empty while the script runs: it is not asked again.
      local raw = not empty[key] and redis.call('RPOP', KEYS[key])
      if not raw then
        empty[key] = true
      else
        local ok, message = pcall(cjson.decode, raw)
        local tag = ''
        if ok and type(message) == 'table' and type(message.properties) == 'table'
            and type(message.properties.delivery_tag) == 'string' then
          tag = message.properties.delivery_tag
          local info = message.properties.delivery_info
          if type(info) ~= 'table' then info = {} end
          redis.call('ZADD', KEYS[1], now, tag)
          redis.call('HSET', KEYS[2], tag, '[' .. raw .. ',' .. js(info.exchange) .. ',' .. js(info.routing_key) .. ']')
          redis.call('HSET', KEYS[3], tag, me)
          redis.call('SADD', KEYS[4], tag)
        end
        out[#out + 1] = KEYS[key]
        out[#out + 1] = raw
        out[#out + 1] = tag
        taken, found = taken + 1, true
        break
      end
    end
  end
end
if taken > 0 then redis.call('SADD', KEYS[5], me) end
return out
