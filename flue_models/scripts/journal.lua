#!lua
-- One step of a submission's recovery journal, fenced on the attempt.
-- KEYS[1]: the submission hash, KEYS[2]: its journal hash
-- ARGV[1]: the operation ("begin" | "phase" | "commit" | "consumed"),
-- ARGV[2]: the attempt id, then per operation:
--   phase: the phase name, its detail (JSON);  commit: the leaf id;  consumed: the stream
-- Returns 1 when recorded, 0 when the attempt is not the submission's current running
-- attempt, or when a commit or a consumed stream was recorded before (they count once).
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'hash')
if bad then return bad end
local row = redis.call('HMGET', KEYS[1], 'status', 'attempt_id')
if row[1] ~= 'running' or row[2] ~= ARGV[2] then return 0 end
local op, attempt = ARGV[1], ARGV[2]
if op == 'begin' then
  redis.call('HSET', KEYS[2], 'attempt', attempt, 'phase:' .. attempt, 'begun')
  return 1
elseif op == 'phase' then
  if redis.call('HGET', KEYS[2], 'attempt') ~= attempt then return 0 end
  redis.call('HSET', KEYS[2], 'phase:' .. attempt, ARGV[3], 'detail:' .. attempt, ARGV[4])
  return 1
elseif op == 'commit' then
  if redis.call('HEXISTS', KEYS[2], 'committed') == 1 then return 0 end
  redis.call('HSET', KEYS[2], 'committed', ARGV[3], 'phase:' .. attempt, 'committed')
  return 1
elseif op == 'consumed' then
  return redis.call('HSETNX', KEYS[2], 'consumed:' .. ARGV[3], attempt)
end
return redis.error_reply('unknown journal operation ' .. tostring(op))
