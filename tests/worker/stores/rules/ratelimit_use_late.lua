-- ARGV: interval, tau, the slot's ticket, max wait (ratelimit_lib.lua). Returns as ratelimit_reserve.lua.
--! now
--! include ratelimit_lib
local granted, wait, ticket = rate_use_late(now, KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3],
                                            tonumber(ARGV[4]))
return {granted, tostring(wait), ticket}
