#!lua
-- Close a stream: no more appends; a marker entry after the last event wakes live tails,
-- and the stream's path enters the closed set, scored by the time it closed (retention).
-- KEYS[1]: metadata hash, KEYS[2]: the Redis Stream of events, KEYS[3]: the closed set
-- Returns 1 when closed now, 2 when it was closed already, 0 when the stream is missing.
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'stream')
  or flue_expect(KEYS[3], 'zset')
if bad then return bad end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
bad = flue_integer(KEYS[1], 'seq', redis.call('HGET', KEYS[1], 'seq'))
if bad then return bad end
if redis.call('HGET', KEYS[1], 'closed') == '1' then return 2 end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local now = redis.call('TIME')
local closed_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('HSET', KEYS[1], 'closed', 1, 'closed_ms', closed_ms)
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'closed', 1)
redis.call('ZADD', KEYS[3], closed_ms, redis.call('HGET', KEYS[1], 'path'))
return 1
