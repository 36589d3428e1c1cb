#!lua
-- Create an event stream's metadata unless it exists (creating again keeps everything).
-- KEYS[1]: the stream's metadata hash; KEYS[2] (optional): the row of the record the
--   stream belongs to, in the same slot (a run's)
-- ARGV[1]: the path, ARGV[2]: the maximum length ("" for none); with KEYS[2]: ARGV[3], a
--   field of the row, and ARGV[4], the value it must hold for the stream to be created
-- Returns 1 when created, 0 when it already existed (or the row does not call for it).
local bad = flue_expect(KEYS[1], 'hash') or (KEYS[2] and flue_expect(KEYS[2], 'hash'))
if bad then return bad end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if KEYS[2] and redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then return 0 end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'path', ARGV[1], 'seq', 0, 'closed', 0,
  'created_ms', now[1] * 1000 + math.floor(now[2] / 1000))
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'max_len', ARGV[2]) end
return 1
