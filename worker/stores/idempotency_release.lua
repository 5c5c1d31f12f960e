-- ARGV: token, '1' when the attempt may have reached ihuyi, slot account and seconds to it ('' for none).
--! now
--! include idempotency_lib
return idempotency_release(now, KEYS[1], unpack(ARGV))
