#!lua flags=no-writes
-- Read a session for a context load: its record and its entries from where the latest
-- compaction's kept entries start (the record's context_from; a fork's own list starts
-- at its fork position). A bad context_from reads from the start: never less than needed.
-- KEYS[1]: the session hash, KEYS[2]: its entry list.
-- Returns {"ok", record fields (HGETALL), logical position of the first element, elements}
--   or {"missing"}.
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'list')
if bad then return bad end
local row = redis.call('HGETALL', KEYS[1])
if #row == 0 then return {'missing'} end
local from = tonumber(redis.call('HGET', KEYS[1], 'context_from') or '0') or 0
local base = 0
local fork = redis.call('HGET', KEYS[1], 'origin')
if fork then
  local ok, origin = pcall(cjson.decode, fork)
  if ok and type(origin) == 'table' and tonumber(origin.position) then
    base = tonumber(origin.position)
  end
end
local skip = math.max(math.floor(from) - base, 0)
return {'ok', row, base + skip, redis.call('LRANGE', KEYS[2], skip, -1)}
