--! now
-- KEYS: the request's record, the number's throttle log and its block (as worker/stores/throttle.py keeps them).
-- ARGV: task id, keep seconds, then limit, seconds per window.
-- Returns {'existing', stored task id}, {'new', task id} or {'throttled', seconds to wait}.
local stored = redis.call('GET', KEYS[1])
if stored then return {'existing', stored} end
-- ihuyi refused the number as called too often: blocked, whatever the windows.
local blocked = redis.call('PTTL', KEYS[3])
if blocked > 0 then return {'throttled', tostring(blocked / 1000)} end
-- The worker's throttle check, without recording: the worker records the call when it submits.
local retry = 0
for i = 3, #ARGV, 2 do
  local limit, seconds = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
  local since = '(' .. string.format('%.6f', now - seconds)
  local excess = redis.call('ZCOUNT', KEYS[2], since, '+inf') - limit
  if excess >= 0 then
    local leaving = redis.call('ZRANGEBYSCORE', KEYS[2], since, '+inf', 'WITHSCORES', 'LIMIT', excess, 1)
    local wait = tonumber(leaving[2]) + seconds - now
    if wait > retry then retry = wait end
  end
end
if retry > 0 then return {'throttled', tostring(retry)} end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return {'new', ARGV[1]}
