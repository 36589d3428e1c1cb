#!lua
-- Mark a fork on its parent, or take the mark away. A fork may be in another bucket (so
-- another slot) than its parent: the fork is written after its mark, and the mark, in the
-- parent's slot, keeps the parent from being replaced or deleted while the fork lives.
-- KEYS[1]: the parent's row, KEYS[2]: its forks (sorted set: fork id -> ms when marked)
-- ARGV[1]: "mark" or "unmark", ARGV[2]: the fork's id,
--   ARGV[3]: for "mark", the parent's version as read;
--            for "unmark", the mark's ms as read ("" to take it whatever it is)
-- Returns {'ok', ms} (marked, at ms), {'missing'} (no parent), {'conflict', version}
-- (the parent changed since it was read), for "unmark" {'ok', 1 or 0} (taken or not:
-- absent, or marked again since it was read).
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'zset')
if bad then return bad end
if ARGV[1] == 'unmark' then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[2])
  if score and (ARGV[3] == '' or tonumber(score) == tonumber(ARGV[3])) then
    return {'ok', redis.call('ZREM', KEYS[2], ARGV[2])}
  end
  return {'ok', 0}
end
local version = redis.call('HGET', KEYS[1], 'version')
bad = flue_integer(KEYS[1], 'version', version)
if bad then return bad end
if not version then return {'missing'} end
if version ~= ARGV[3] then return {'conflict', tonumber(version)} end
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
redis.call('ZADD', KEYS[2], ms, ARGV[2])
return {'ok', ms}
