-- KEYS: the record; a hash per counter to add to; with a task result, its key; with an ack,
-- then the message's unacked index, unacked hash, owner hash and its taker's owned set
-- (worker/broker/transport.py).
-- ARGV: status, result JSON, how many counters (n), each counter's field and increment; with
-- a task result, its meta JSON and lifetime in seconds (stored and published as Celery's
-- Redis result backend stores them); with an ack, the delivery tag.
-- An accepted Submit is never overwritten: its result is returned then, and the task result
-- left to the caller. The counters and the ack are made either way: they are what this
-- delivery did. A counter that cannot be added to (a key of another type) is skipped, not
-- the finish. Returns {the kept result or false, how many counters were skipped}.
local key, n = KEYS[1], tonumber(ARGV[3])
local skipped = 0
for i = 1, n do
  if type(redis.pcall('HINCRBY', KEYS[1 + i], ARGV[2 + 2 * i], ARGV[3 + 2 * i])) == 'table' then
    skipped = skipped + 1  -- an error reply
  end
end
local result_key, meta = KEYS[2 + n], 4 + 2 * n
local tag = ARGV[meta + 2]
if tag then
  redis.call('ZREM', KEYS[3 + n], tag)
  redis.call('HDEL', KEYS[4 + n], tag)
  redis.call('HDEL', KEYS[5 + n], tag)
  redis.call('SREM', KEYS[6 + n], tag)
end
if ARGV[1] ~= 'submitted' and redis.call('HGET', key, 'status') == 'submitted' then
  return {redis.call('HGET', key, 'result'), skipped}
end
-- The attempt's lease, owner and holder stay: they are read only while the status is 'inflight'.
redis.call('HSET', key, 'status', ARGV[1], 'result', ARGV[2])
if result_key then
  redis.call('SET', result_key, ARGV[meta], 'EX', ARGV[meta + 1])
  redis.call('PUBLISH', result_key, ARGV[meta])
end
return {false, skipped}
