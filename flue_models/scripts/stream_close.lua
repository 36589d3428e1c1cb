#!lua
-- Close a stream: no more appends; a marker entry after the last event wakes live tails.
-- KEYS[1]: metadata hash, KEYS[2]: the Redis Stream of events (one slot: the stream's)
-- Returns {'closed', closed_ms} when closed now, {'already', closed_ms} when it was
-- closed before, {'missing'} when the stream does not exist. The caller then adds the
-- path to the closed set (another slot), so a retried close also repairs a closed set a
-- crash left behind.
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'stream')
if bad then return bad end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
bad = flue_integer(KEYS[1], 'seq', redis.call('HGET', KEYS[1], 'seq'))
if bad then return bad end
if redis.call('HGET', KEYS[1], 'closed') == '1' then
  local at = redis.call('HGET', KEYS[1], 'closed_ms')
  bad = flue_integer(KEYS[1], 'closed_ms', at)
  if bad then return bad end
  return {'already', tonumber(at or '0')}
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local now = redis.call('TIME')
local closed_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('HSET', KEYS[1], 'closed', 1, 'closed_ms', closed_ms)
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'closed', 1)
return {'closed', closed_ms}
