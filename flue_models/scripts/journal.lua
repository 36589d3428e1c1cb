#!lua
-- One step of a submission's recovery journal: one slot per submission, fenced on the
-- attempt. Every step that writes also gives the submission row a new version (from the
-- collection's counter), so a compare-and-set on the row (replace_attempt moving the
-- slot to a new attempt) never overwrites a journal step it did not read.
-- KEYS[1]: the submission hash, KEYS[2]: its journal hash, KEYS[3]: the version counter
-- ARGV[1]: the operation, ARGV[2]: the attempt id, then per operation:
--   begin:                      (creates or replaces the slot; returns the new revision)
--   phase:    phase, detail (JSON), stream key ("" for none)
--   commit:   leaf id           (1 also for a retry with the same leaf)
--   consumed: stream key        (1 only the first time, only for the recorded key)
-- Returns {result, version read, version left}: result 0, writing nothing (the two
-- versions equal), when the attempt is not the row's current running attempt, when the
-- slot is not this attempt's, or when the step is refused as described. A step that
-- writes changes nothing else of the row than its version.
local row_key, journal, counter = KEYS[1], KEYS[2], KEYS[3]
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'hash')
  or flue_expect(KEYS[3], 'string')
  or flue_integer(counter, 'value', redis.call('GET', counter))
  or flue_integer(journal, 'revision', redis.call('HGET', journal, 'revision'))
if bad then return bad end
local op, attempt = ARGV[1], ARGV[2]
local row = redis.call('HMGET', row_key, 'status', 'attempt_id', 'version')
local version = tonumber(row[3] or '0')
bad = flue_integer(row_key, 'version', row[3])
if bad then return bad end
local left = version
local function answer(result) return {result, version, left} end
if row[1] ~= 'running' or row[2] ~= attempt then return answer(0) end

local function touched()  -- the row shows that its journal changed
  left = redis.call('INCR', counter)
  redis.call('HSET', row_key, 'version', left)
end

if op == 'begin' then
  local revision = tonumber(redis.call('HGET', journal, 'revision') or '0') + 1
  redis.call('DEL', journal)
  redis.call('HSET', journal, 'attempt', attempt, 'revision', revision,
    'phase', 'before_provider')
  touched()
  return answer(revision)
end
local slot = redis.call('HMGET', journal, 'attempt', 'committed', 'stream_key', 'consumed')
if slot[1] ~= attempt then return answer(0) end
if op == 'phase' then
  if slot[2] then return answer(0) end  -- committed: the turn is over
  local stream_key = ARGV[5]
  if stream_key ~= '' and slot[3] and slot[3] ~= stream_key then return answer(0) end
  redis.call('HSET', journal, 'phase', ARGV[3], 'detail', ARGV[4])
  if stream_key ~= '' then redis.call('HSET', journal, 'stream_key', stream_key) end
  touched()
  return answer(1)
elseif op == 'commit' then
  if slot[2] then return answer(slot[2] == ARGV[3] and 1 or 0) end
  redis.call('HSET', journal, 'committed', ARGV[3], 'phase', 'committed')
  touched()
  return answer(1)
elseif op == 'consumed' then
  if slot[3] ~= ARGV[3] or slot[4] then return answer(0) end
  redis.call('HSET', journal, 'consumed', 1)
  touched()
  return answer(1)
end
return redis.error_reply('unknown journal operation ' .. tostring(op))
