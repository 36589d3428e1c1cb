#!lua
-- A session's deletion marker and its entry in the bucket's set of deletions, changed
-- together: a deletion is listed (interrupted_deletions) exactly while it is begun and
-- not ended, and a refused deleter never lists one.
-- KEYS[1]: the marker (token with a lease), KEYS[2]: the bucket's set of deletions
-- ARGV[1]: "take" | "end" | "release", ARGV[2]: the token, ARGV[3]: the session id,
-- ARGV[4]: the lease (ms, "take")
-- take: hold the marker and list the deletion; 0 when another deleter holds it (a
--   marker without a lease is held by nobody).
-- end: the deletion is over (finished, or refused: busy) - release the marker and unlist
--   it, unless another deleter holds the marker now (its deletion stays listed).
-- release: release the marker only (a deletion cut short stays listed as interrupted).
-- Returns 1 when done, 0 otherwise.
local bad = flue_expect(KEYS[1], 'string') or flue_expect(KEYS[2], 'set')
if bad then return bad end
local op, held = ARGV[1], redis.call('GET', KEYS[1])
if op == 'take' then
  -- a marker without a lease (a hand edit, an older version) is taken over
  if held and redis.call('PTTL', KEYS[1]) ~= -1 then return 0 end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[4])
  redis.call('SADD', KEYS[2], ARGV[3])
  return 1
end
if held and held ~= ARGV[2] then return 0 end
if held then redis.call('DEL', KEYS[1]) end
if op == 'end' then redis.call('SREM', KEYS[2], ARGV[3]) end
return 1
