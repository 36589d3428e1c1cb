#!lua
-- Increment a counter and return its new value.
-- KEYS[1]: the counter
-- ARGV[1]: the increment
return redis.call('INCRBY', KEYS[1], ARGV[1])
