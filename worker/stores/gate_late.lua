-- A send that reached its slot late (worker/stores/gate.py): the slot used as the account's
-- GCRA allows (ratelimit_lib.lua's rate_use_late), and what that calls for as gate.lua says it.
-- KEYS: the request's record, the account's rate key. ARGV: the lease's token, the account,
-- the slot's ticket ('' for none), the code's deadline (server clock), the longest wait to
-- hold in the worker, the account's interval and tau.
-- Returns {verdict, seconds, ticket}: go, park (the lease given back, the slot kept in the
-- record) or late, as gate.lua's.
--! now
--! include idempotency_lib
--! include ratelimit_lib
--! include gate_lib
local granted, wait, ticket = rate_use_late(now, KEYS[2], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[3],
                                            tonumber(ARGV[4]) - now)
return {take_slot(now, KEYS[1], ARGV[1], ARGV[2], granted, wait, tonumber(ARGV[5])), tostring(wait), ticket}
