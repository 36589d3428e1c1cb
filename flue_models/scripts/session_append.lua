#!lua
-- Append entries to a session: RPUSH their elements, record each entry's position under
-- its id, and move the leaf, atomically. Earlier entries are not touched. The session's
-- version does not change.
-- KEYS[1]: the session hash, KEYS[2]: its entry list, KEYS[3]: entry id -> position hash
-- ARGV[1]: the new leaf id, ARGV[2]: how many entries, ARGV[3]: "1" for once (idempotent
--   on the entry ids), then per entry: its id, n_elements, element, ...
-- Returns {"ok" | "replay", entry_count, updated_at, leaf_id}, {"missing"} (writing
--   nothing: the session does not exist), or {"conflict", entry_id} (writing nothing:
--   with once, that id was appended with other content, or only some entries were).
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'list')
  or flue_expect(KEYS[3], 'hash')
if bad then return bad end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
bad = flue_integer(KEYS[1], 'entry_count', redis.call('HGET', KEYS[1], 'entry_count'))
if bad then return bad end

local entries, a = {}, 4
for _ = 1, tonumber(ARGV[2]) do
  local entry = {id = ARGV[a], elements = {}}
  local n = tonumber(ARGV[a + 1]); a = a + 2
  for _ = 1, n do table.insert(entry.elements, ARGV[a]); a = a + 1 end
  table.insert(entries, entry)
end

local function stored_state(status)
  local row = redis.call('HMGET', KEYS[1], 'entry_count', 'updated_at', 'leaf_id')
  return {status, tonumber(row[1] or '0'), row[2] or '', row[3] or ''}
end

if ARGV[3] == '1' then
  local seen = 0
  for _, entry in ipairs(entries) do
    local at = redis.call('HGET', KEYS[3], entry.id)
    if at then
      local pos = tonumber(at)
      local stored = redis.call('LRANGE', KEYS[2], pos, pos + #entry.elements - 1)
      if #stored ~= #entry.elements then return {'conflict', entry.id} end
      for i, element in ipairs(entry.elements) do
        if stored[i] ~= element then return {'conflict', entry.id} end
      end
      seen = seen + 1
    elseif seen > 0 then
      return {'conflict', entry.id}
    end
  end
  if seen == #entries then return stored_state('replay') end
  if seen > 0 then return {'conflict', entries[1].id} end
end

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

local position = redis.call('LLEN', KEYS[2])
for _, entry in ipairs(entries) do
  redis.call('HSETNX', KEYS[3], entry.id, position)  -- the first entry with an id keeps it
  for i = 1, #entry.elements, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(entry.elements, i, math.min(i + 999, #entry.elements)))
  end
  position = position + #entry.elements
end
local now = redis.call('TIME')
local updated = iso(tonumber(now[1]), tonumber(now[2]))
local count = redis.call('HINCRBY', KEYS[1], 'entry_count', #entries)
redis.call('HSET', KEYS[1], 'leaf_id', ARGV[1], 'updated_at', updated)
return {'ok', count, updated, ARGV[1]}
