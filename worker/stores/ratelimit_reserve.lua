--! now
local interval, tau, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local wait = tat - tau - now
if wait > max_wait then return {0, tostring(wait)} end
local new_tat = tat + interval
redis.call('SET', KEYS[1], string.format('%.6f', new_tat),
           'PX', math.ceil((new_tat - now) * 1000) + 1000)
if wait < 0 then wait = 0 end
return {1, tostring(wait)}
