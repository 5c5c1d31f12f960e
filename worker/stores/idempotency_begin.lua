-- ARGV: ttl, enqueued_at ('' when unknown), lease seconds, keep seconds, token, holder,
-- heartbeat key prefix, heartbeat ms (idempotency_lib.lua).
--! now
--! include idempotency_lib
return idempotency_begin(now, KEYS[1], unpack(ARGV))
