-- ihuyi refused the sending host itself (its IP, its clock) on a Submit (worker/stores/gate.py):
-- the account paused on this host, and the send handed back for another host while
-- gate_lib.lua's window allows: 'hand_back', the lease given back (not counted); else
-- 'dead_letter'.
-- KEYS: the request's record, the account's hash. ARGV: the code, its msg, '@<host>', the
-- lease's token, the first attempt and the deadline (server clock), the hand-back window and
-- delay.
--! now
--! include idempotency_lib
--! include accounts_lib
--! include gate_lib
account_pause(now, KEYS[2], ARGV[1], ARGV[2], ARGV[3])
if not may_hand_back(now, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])) then
  return 'dead_letter'
end
idempotency_release(now, KEYS[1], ARGV[4], '0', '', 0)
return 'hand_back'
