-- ARGV: interval, tau, max wait (ratelimit_lib.lua). Returns {granted (1 or 0), seconds, ticket}.
--! now
--! include ratelimit_lib
local granted, wait, ticket = rate_reserve(now, KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
return {granted, tostring(wait), ticket}
