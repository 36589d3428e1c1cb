#!lua
-- Record a completed migration in the schema record, fenced on the migration lock.
-- KEYS[1]: the schema record hash (<prefix>:meta), KEYS[2]: the migration lock
-- ARGV[1]: the lock owner token,
--   ARGV[2]: n_set, then field, value pairs to set,
--   then n_del, then fields to delete.
-- Returns 1, or 0 (writing nothing) when the caller no longer holds the lock.
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'string')
if bad then return bad end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local a = 2
local n_set = tonumber(ARGV[a]); a = a + 1
for _ = 1, n_set do
  redis.call('HSET', KEYS[1], ARGV[a], ARGV[a + 1]); a = a + 2
end
local n_del = tonumber(ARGV[a]); a = a + 1
for _ = 1, n_del do
  redis.call('HDEL', KEYS[1], ARGV[a]); a = a + 1
end
return 1
