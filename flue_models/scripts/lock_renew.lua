#!lua
-- Extend a lock's expiry, but only for its owner.
-- KEYS[1]: the lock
-- ARGV[1]: the owner token, ARGV[2]: the new time to live in milliseconds
-- Returns 1 when renewed, 0 when the lock is gone or held by someone else.
local bad = flue_expect(KEYS[1], 'string')
if bad then return bad end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
