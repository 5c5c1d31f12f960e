-- KEYS: unacked index, unacked hash, owner hash, my owned set, owners set, my heartbeat key,
-- then each queue's lists in priority order.
-- ARGV: now, how many to take, how many lists each queue has, my identity.
-- Takes from the queues in turn, each round an even share of what is still wanted from each
-- queue not yet found empty, highest priority first, until enough or all empty. On Redis 7
-- one LMPOP takes a queue's share from its first non-empty list; before, one RPOP takes one
-- message. The unacked entries have kombu's format: [message, exchange, routing key]. Each
-- taken tag is recorded as mine (owner hash and my owned set), and I among the owners, so a
-- live worker gives it back once my heartbeat is gone; the records of one call are written
-- together, one command per key. Without a heartbeat nothing is taken: the others may
-- already count me dead.
local now, limit, per, me = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local function js(value)
  if value == nil then return 'null' end
  return cjson.encode(value)
end
if redis.call('EXISTS', KEYS[6]) == 0 or redis.call('EXISTS', unpack(KEYS, 7)) == 0 then return {} end
local lmpop = (redis.REDIS_VERSION_NUM or 0) >= 0x070000

-- Up to ``count`` messages from the queue whose lists start at KEYS[first]: the list, the messages.
local empty = {}
local function pop(first, count)
  if lmpop then
    local args = {per, unpack(KEYS, first, first + per - 1)}
    args[#args + 1], args[#args + 2], args[#args + 3] = 'RIGHT', 'COUNT', count
    local got = redis.call('LMPOP', unpack(args))
    if got then return got[1], got[2] end
    return nil
  end
  for key = first, first + per - 1 do
    -- A list found empty stays empty while the script runs: it is not asked again.
    local raw = not empty[key] and redis.call('RPOP', KEYS[key])
    if raw then return KEYS[key], {raw} end
    empty[key] = true
  end
  return nil
end

local out, index, entries, owners, tags = {}, {}, {}, {}, {}
local function record(list, raw)
  local ok, message = pcall(cjson.decode, raw)
  local tag = ''
  if ok and type(message) == 'table' and type(message.properties) == 'table'
      and type(message.properties.delivery_tag) == 'string' then
    tag = message.properties.delivery_tag
    local info = message.properties.delivery_info
    if type(info) ~= 'table' then info = {} end
    index[#index + 1], index[#index + 2] = now, tag
    entries[#entries + 1] = tag
    entries[#entries + 1] = '[' .. raw .. ',' .. js(info.exchange) .. ',' .. js(info.routing_key) .. ']'
    owners[#owners + 1], owners[#owners + 2] = tag, me
    tags[#tags + 1] = tag
  end
  out[#out + 1], out[#out + 2], out[#out + 3] = list, raw, tag
end

local queues, drained = {}, {}
for first = 7, #KEYS, per do queues[#queues + 1] = first end
local taken, live = 0, #queues
while taken < limit and live > 0 do
  local share = math.ceil((limit - taken) / live)
  for _, first in ipairs(queues) do
    if taken >= limit then break end
    if not drained[first] then
      local list, raws = pop(first, math.min(share, limit - taken))
      if list then
        for _, raw in ipairs(raws) do record(list, raw) end
        taken = taken + #raws
      else
        drained[first], live = true, live - 1
      end
    end
  end
end
if #tags > 0 then
  redis.call('ZADD', KEYS[1], unpack(index))
  redis.call('HSET', KEYS[2], unpack(entries))
  redis.call('HSET', KEYS[3], unpack(owners))
  redis.call('SADD', KEYS[4], unpack(tags))
end
if taken > 0 then redis.call('SADD', KEYS[5], me) end
return out
