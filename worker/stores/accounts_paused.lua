-- ARGV: '@<host>', or '' for the pool's pause alone. Returns accounts_lib.lua's account_paused.
--! include accounts_lib
return account_paused(KEYS[1], ARGV[1])
