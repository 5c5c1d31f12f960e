-- KEYS: the number's block. ARGV: milliseconds. A block already longer is kept.
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
end
