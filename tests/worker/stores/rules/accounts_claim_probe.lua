-- KEYS: the account's hash, the host's probe lock. ARGV: '@<host>', seconds between probes.
-- 1 when the caller may probe the host's pause now (accounts_lib.lua's account_claim_probe).
--! now
--! include accounts_lib
local pause = account_paused(KEYS[1], ARGV[1])
return account_claim_probe(now, pause, KEYS[2], tonumber(ARGV[2])) and 1 or 0
