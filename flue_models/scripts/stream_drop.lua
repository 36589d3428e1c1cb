#!lua
-- Delete a stream closed before a time, checking it in the same call (retention): a
-- stream deleted and made again at the same path since it was listed is open, or closed
-- later, and is kept.
-- KEYS[1..4]: metadata hash, events, idempotency hash, chunks (one slot: the stream's)
-- ARGV[1]: the time (ms) it must have closed before
-- Returns 1 when deleted, 0 when kept (missing, open, or closed since).
local bad = flue_expect(KEYS[1], 'hash')
if bad then return bad end
if redis.call('HGET', KEYS[1], 'closed') ~= '1' then return 0 end
local at = redis.call('HGET', KEYS[1], 'closed_ms')
bad = flue_integer(KEYS[1], 'closed_ms', at)
if bad then return bad end
if tonumber(at or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
return 1
