-- ARGV: verification id, task id. Returns 1 if the record is still that verification, else 0.
if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'task_id', ARGV[2])
return 1
