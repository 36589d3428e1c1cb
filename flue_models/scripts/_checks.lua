-- The check phase shared by every write script: it runs before the script's first write
-- and refuses with an error reply the Python side turns into a typed error.
--   FLUE_WRONGTYPE <key> <found type> <wanted type>
--   FLUE_CORRUPT <key> <field> <value found>
-- (Inserted by the loader after the script's #!lua line; see scripts/__init__.py.)

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
