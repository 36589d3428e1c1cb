#!lua
-- Keep only the last N events of a stream (the close marker, if any, is kept too).
-- KEYS[1]: metadata hash, KEYS[2]: the Redis Stream of events
-- ARGV[1]: how many events to keep
-- Returns the number of entries removed.
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'stream')
if bad then return bad end
local keep = tonumber(ARGV[1])
if redis.call('HGET', KEYS[1], 'closed') == '1' then keep = keep + 1 end
return redis.call('XTRIM', KEYS[2], 'MAXLEN', keep)
