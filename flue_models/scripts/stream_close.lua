#!lua
-- Close a stream: no more appends; a marker entry after the last event wakes live tails.
-- KEYS[1]: metadata hash, KEYS[2]: the Redis Stream of events (one slot: the stream's);
--   KEYS[3] (optional): the row of the record the stream belongs to, in the same slot
-- ARGV (with KEYS[3]): ARGV[1], a field of the row, and ARGV[2], a value of it that keeps
--   the stream open (a run's status "active"): then, or with no row, nothing is closed
-- Returns {'closed', closed_ms} when closed now, {'already', closed_ms} when it was
-- closed before, {'missing'} when the stream does not exist, {'kept'} when the row keeps
-- it open. The caller then adds the path to the closed set (another slot), so a retried
-- close also repairs a closed set a crash left behind.
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'stream')
  or (KEYS[3] and flue_expect(KEYS[3], 'hash'))
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
if KEYS[3] then
  local value = redis.call('HGET', KEYS[3], ARGV[1])
  if not value or value == ARGV[2] then return {'kept'} end
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq'))
local now = redis.call('TIME')
local closed_ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('HSET', KEYS[1], 'closed', 1, 'closed_ms', closed_ms)
redis.call('XADD', KEYS[2], '0-' .. (seq + 1), 'closed', 1)
return {'closed', closed_ms}
