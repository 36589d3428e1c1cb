#!lua
-- Append entries to a session: RPUSH their elements, record each entry's position under
-- its id, move the leaf, and rescore the session in its index sets (they are ordered by
-- updated_at), atomically. Earlier entries are not touched. The version does not change.
-- Positions are logical: a fork's own list starts at its fork position (the record's
-- fork.position), below which its history is its parent's.
-- KEYS[1]: the session hash, KEYS[2]: its entry list, KEYS[3]: entry id -> position hash,
--   KEYS[4..]: the index sets the session is in (each rescored with the new updated_at)
-- ARGV[1]: the session id, ARGV[2]: the new leaf id, ARGV[3]: how many entries,
--   ARGV[4]: "=" followed by the leaf the caller expects when the first entry continues
--   from the leaf ("=" alone: no leaf yet), "" when it names its own parent, ARGV[5]: the
--   fork_of the caller expects ("" for none), ARGV[6]: the record's _owned with "@#seq" for
--   the score, ARGV[7] and ARGV[8]: when the first entry continues from the leaf, how many
--   bytes of its JSON come before and after its parent_id value (else 0 and 0);
--   then per entry: its id, the parent id to look for in this session's entry ids (""
--   when the caller knows it: none, the leaf, an earlier entry of the call, or one found
--   in a parent's history), the first kept entry id of a compaction ("" for a message),
--   that entry's position when the caller found it in a parent's history (-1: not found),
--   n_elements, element, ...
-- An entry id stored before is a replay when its JSON is the same (for a first entry that
-- continues from the leaf: the same but for its parent_id), else a conflict; a call is
-- all replays (nothing written) or none.
-- Returns {"ok" | "replay", entry_count, updated_at, leaf_id, context_from},
--   {"missing"} (the session does not exist), {"stale"} (its fork_of is not the caller's:
--   the caller's index keys may be wrong), {"moved", leaf_id} (the leaf is not the one the
--   caller expected), {"conflict", entry_id} (that id was appended with other content, or
--   only some entries were) or {"orphan", entry_id, parent_id} (the parent names no entry
--   of this session); those write nothing.
-- Types: the row's, the list's and the entry id hash's by their first reads (made with
-- redis.pcall, the type looked up only on a refusal), the index sets by flue_expect; all
-- before the first write, as is the check that the entries account for every argument.
-- (For one new entry after the expected leaf, the entry id hash's first command is the
-- HSETNX of its id: the first write, made after every other check; a refusal writes
-- nothing.)
local row = redis.pcall('HMGET', KEYS[1], 'id', 'entry_count', 'context_from', 'fork_of',
  'origin', 'leaf_id')
if row.err then return flue_wrong(KEYS[1], 'hash') end
if not row[1] then return {'missing'} end  -- every session row holds its id
local entry_count, context_text, fork_of, origin_json, leaf = row[2], row[3], row[4], row[5],
  row[6]
local length = redis.pcall('LLEN', KEYS[2])
if type(length) == 'table' then return flue_wrong(KEYS[2], 'list') end
local bad
for i = 4, #KEYS do bad = bad or flue_expect(KEYS[i], 'zset') end
if bad then return bad end
bad = flue_integer(KEYS[1], 'entry_count', entry_count)
  or flue_integer(KEYS[1], 'context_from', context_text)
if bad then return bad end
if (fork_of or '') ~= ARGV[5] then return {'stale'} end
local base = 0
if origin_json then
  local ok, origin = pcall(cjson.decode, origin_json)
  if not ok or type(origin) ~= 'table' or not tonumber(origin.position) then
    return redis.error_reply('FLUE_CORRUPT ' .. KEYS[1] .. ' origin ' .. origin_json)
  end
  base = tonumber(origin.position)
end

-- Where each entry begins in ARGV (its id, parent, kept, shared, n_elements, elements),
-- and where the arguments end after the last: entry i's elements run from
-- starts[i] + 5 to starts[i + 1] - 1. Entries are read where they lie, not copied.
local starts, a = {}, 9
local n_entries = tonumber(ARGV[3])
for i = 1, n_entries do
  starts[i] = a
  a = a + 5 + tonumber(ARGV[a + 4])
end
starts[n_entries + 1] = a
if a ~= #ARGV + 1 then
  return redis.error_reply('ERR session_append: the entries name ' .. (a - 1)
    .. ' arguments, the call has ' .. #ARGV)
end

-- One new entry after the leaf the caller expects (the common append): the HSETNX of its id
-- is the replay check and the first write. An id stored before (HSETNX writes nothing),
-- or any other call, takes the full checks below.
local position = base + length
local leaf_as_expected = ARGV[4] == '' or ARGV[4] == '=' .. (leaf or '')
local fresh = false
if n_entries == 1 and ARGV[10] == '' and leaf_as_expected then
  local added = redis.pcall('HSETNX', KEYS[3], ARGV[9], position)
  if type(added) == 'table' then return flue_wrong(KEYS[3], 'hash') end
  fresh = added == 1
end

if not fresh then
  local function stored_state(status)
    local now = redis.call('HMGET', KEYS[1], 'entry_count', 'updated_at', 'leaf_id',
      'context_from')
    return {status, tonumber(now[1] or '0'), now[2] or '', now[3] or '', tonumber(now[4] or '0')}
  end

  -- An entry's JSON from its elements list[first..last]: "E" and the JSON, or "H<n>" and
  -- n "C" chunks.
  local function joined(list, first, last)
    if first == last then return string.sub(list[first], 2) end
    local parts = {}
    for i = first + 1, last do parts[i - first] = string.sub(list[i], 2) end
    return table.concat(parts)
  end
  local function stored_json(position)
    local first = redis.call('LINDEX', KEYS[2], position)
    if not first then return '' end
    if string.sub(first, 1, 1) ~= 'H' then return string.sub(first, 2) end
    local chunks = redis.call('LRANGE', KEYS[2], position + 1,
      position + (tonumber(string.sub(first, 2)) or 0))
    local elements = {first, unpack(chunks)}
    return joined(elements, 1, #elements)
  end

  local seen = 0
  for i = 1, n_entries do
    local p = starts[i]
    local id = ARGV[p]
    local at = redis.pcall('HGET', KEYS[3], id)
    if type(at) == 'table' then return flue_wrong(KEYS[3], 'hash') end
    if at then
      local stored = stored_json(tonumber(at) - base)
      local sent = joined(ARGV, p + 5, starts[i + 1] - 1)
      local same = stored == sent
      if not same and i == 1 and ARGV[4] ~= '' then  -- the same but for the parent it took
        local before, after = tonumber(ARGV[7]), tonumber(ARGV[8])
        same = #stored >= before + after
          and string.sub(stored, 1, before) == string.sub(sent, 1, before)
          and (after == 0 or string.sub(stored, -after) == string.sub(sent, -after))
      end
      if not same then return {'conflict', id} end
      seen = seen + 1
    elseif seen > 0 then
      return {'conflict', id}
    end
  end
  if seen == n_entries then return stored_state('replay') end
  if seen > 0 then return {'conflict', ARGV[starts[1]]} end
  if not leaf_as_expected then return {'moved', leaf or ''} end
  for i = 1, n_entries do
    local p = starts[i]
    local parent = ARGV[p + 1]
    if parent ~= '' and parent ~= leaf and redis.call('HEXISTS', KEYS[3], parent) == 0 then
      return {'orphan', ARGV[p], parent}
    end
  end
end

local context_from = tonumber(context_text or '0')
for i = 1, n_entries do
  local p, last = starts[i], starts[i + 1] - 1  -- last: its last element
  if not fresh then  -- the first entry with an id keeps it
    redis.call('HSETNX', KEYS[3], ARGV[p], position)
  end
  if ARGV[p + 2] ~= '' then  -- a compaction: its kept entries start the context now
    local kept, shared = redis.call('HGET', KEYS[3], ARGV[p + 2]), tonumber(ARGV[p + 3])
    context_from = tonumber(kept or '') or (shared >= 0 and shared or position)
  end
  for first = p + 5, last, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(ARGV, first, math.min(first + 999, last)))
  end
  position = position + last - p - 4
end
local _, updated, score, shown = flue_now()  -- updated_at, its score, _owned's text of it
local count = redis.call('HINCRBY', KEYS[1], 'entry_count', n_entries)
local owned = string.gsub(ARGV[6], '@#seq', '@' .. shown)
redis.call('HSET', KEYS[1], 'leaf_id', ARGV[2], 'updated_at', updated,
  'context_from', context_from, '_owned', owned)
for i = 4, #KEYS do redis.call('ZADD', KEYS[i], score, ARGV[1]) end
return {'ok', count, updated, ARGV[2], context_from}
