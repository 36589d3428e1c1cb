#!lua
-- Remove a member from a sorted set only if its score is still the one read: an entry a
-- writer added again since (a stream closed again, with its new time) is kept.
-- KEYS[1]: the sorted set; ARGV[1]: the member, ARGV[2]: the score read
-- Returns 1 when removed, 0 when kept (gone, or scored otherwise).
local bad = flue_expect(KEYS[1], 'zset')
if bad then return bad end
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) == tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0
