#!lua
-- Append entries to a session: RPUSH their elements and move the leaf, atomically.
-- Earlier entries are not touched. The session's version does not change.
-- KEYS[1]: the session hash, KEYS[2]: its entry list
-- ARGV[1]: the new leaf id, ARGV[2]: how many entries, ARGV[3...]: the list elements
-- Returns {entry_count, updated_at} or 0 (writing nothing) when the session is missing.
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'list')
if bad then return bad end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
bad = flue_integer(KEYS[1], 'entry_count', redis.call('HGET', KEYS[1], 'entry_count'))
if bad then return bad end

-- Server time as ISO 8601 UTC with microseconds, as the model stores datetimes.
local function iso(sec, usec)
  local days = math.floor(sec / 86400)
  local rem = sec - days * 86400
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524)
    - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local d = doy - math.floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  return string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00', y, m, d,
    math.floor(rem / 3600), math.floor(rem % 3600 / 60), rem % 60, usec)
end

for i = 3, #ARGV, 1000 do
  redis.call('RPUSH', KEYS[2], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
local now = redis.call('TIME')
local updated = iso(tonumber(now[1]), tonumber(now[2]))
local count = redis.call('HINCRBY', KEYS[1], 'entry_count', tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'leaf_id', ARGV[1], 'updated_at', updated)
return {count, updated}
