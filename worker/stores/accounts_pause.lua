-- ARGV: code, msg, and '' for the pool or '@<host>' for one host's pause (accounts_lib.lua).
--! now
--! include accounts_lib
return account_pause(now, KEYS[1], ARGV[1], ARGV[2], ARGV[3])
