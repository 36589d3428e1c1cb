#!lua
-- Release a lock, but only for its owner.
-- KEYS[1]: the lock
-- ARGV[1]: the owner token
-- Returns 1 when released, 0 when the lock is gone or held by someone else.
local bad = flue_expect(KEYS[1], 'string')
if bad then return bad end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
