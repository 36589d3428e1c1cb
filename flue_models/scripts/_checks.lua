-- What every write script shares: the check phase, which runs before the script's first
-- write and refuses with an error reply the Python side turns into a typed error, and the
-- server's clock as the Python side encodes a time.
--   FLUE_WRONGTYPE <key> <found type> <wanted type>
--   FLUE_CORRUPT <key> <field> <value found>
-- (The loader inserts each helper a script names, and those it names, after the
-- script's #!lua line; see scripts/__init__.py. A helper is one paragraph: its comment
-- and its code, with no blank line inside.)

-- Nil when `value` (read from `field` of `key`) is absent or a whole number.
local function flue_integer(key, field, value)
  if value and not string.match(value, '^%-?%d+$') then
    return redis.error_reply('FLUE_CORRUPT ' .. key .. ' ' .. field .. ' ' .. value)
  end
  return nil
end

-- The refusal of `key`, which a command just refused as of another type than `wanted`
-- (a read made with redis.pcall: the type is looked up only then).
local function flue_wrong(key, wanted)
  return redis.error_reply('FLUE_WRONGTYPE ' .. key .. ' ' .. redis.call('TYPE', key)['ok']
    .. ' ' .. wanted)
end

-- Nil when `key` is absent or of type `wanted`; else the refusal to return. The check is
-- an O(1) read that only a key of another type refuses (its reply, a number, costs Lua
-- less than TYPE's); the type found is looked up only then.
local function flue_expect(key, wanted)
  local probe = wanted == 'zset' and 'ZCARD' or wanted == 'hash' and 'HLEN'
    or wanted == 'list' and 'LLEN' or wanted == 'string' and 'STRLEN'
    or wanted == 'set' and 'SCARD' or wanted == 'stream' and 'XLEN'
    or error('flue_expect: no check of type ' .. wanted)
  if type(redis.pcall(probe, key)) == 'table' then return flue_wrong(key, wanted) end
  return nil
end

-- The server's time, as the Python side stores and scores a datetime: microseconds since
-- the epoch; ISO 8601 in UTC with microseconds (Python's isoformat of an aware UTC
-- datetime); the score, epoch milliseconds with the microseconds as fraction
-- (codec.epoch_score); and that score as _owned names it (format_score: no trailing
-- zeros). Lua's own number conversion keeps 14 digits, so numbers are written with %d.
-- flue_at(micros) gives the same of a time given in microseconds since the epoch.
local function flue_at(micros)
  local floor = math.floor
  local usec = micros % 1000000  -- Lua's % floors: exact on whole numbers below 2^53
  local sec = (micros - usec) / 1000000
  local rem = sec % 86400
  local z = (sec - rem) / 86400 + 719468  -- days to a civil date (H. Hinnant's algorithm)
  local era = floor(z / 146097)
  local doe = z - era * 146097
  local yoe = floor((doe - floor(doe / 1460) + floor(doe / 36524) - floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + floor(yoe / 4) - floor(yoe / 100))
  local mp = floor((5 * doy + 2) / 153)
  local d = doy - floor((153 * mp + 2) / 5) + 1
  local m = mp < 10 and mp + 3 or mp - 9
  local y = yoe + era * 400 + (m <= 2 and 1 or 0)
  local seconds = rem % 3600
  local iso = string.format('%04d-%02d-%02dT%02d:%02d:%02d.%06d+00:00', y, m, d,
    (rem - seconds) / 3600, floor(seconds / 60), seconds % 60, usec)
  local frac = usec % 1000
  local millis = (micros - frac) / 1000
  local score = string.format('%d.%03d', millis, frac)
  local shown = frac == 0 and string.format('%d', millis)  -- the score less trailing zeros
    or frac % 100 == 0 and string.format('%d.%d', millis, frac / 100)
    or frac % 10 == 0 and string.format('%d.%02d', millis, frac / 10)
    or score
  return micros, iso, score, shown
end

local function flue_now()
  local now = redis.call('TIME')
  return flue_at(tonumber(now[1]) * 1000000 + tonumber(now[2]))
end
