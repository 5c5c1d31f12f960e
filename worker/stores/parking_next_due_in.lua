local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if #first == 0 then return false end
local t = redis.call('TIME')
local wait = tonumber(first[2]) - (tonumber(t[1]) + tonumber(t[2]) / 1000000)
if wait < 0 then wait = 0 end
return tostring(wait)
