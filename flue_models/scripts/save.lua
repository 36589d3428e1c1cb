#!lua
-- Save or delete a batch of records atomically: every version check and unique claim
-- is verified before anything is written, so the batch is all or nothing.
--
-- Versions come from one counter per collection, so a record deleted and created again
-- never reuses a version, and a copy of the old record can never pass the check.
--
-- KEYS[1]: the collection's version counter; then, per record, in order:
--   the record hash,
--   n_zrem sorted sets to remove the id from,
--   n_zadd sorted sets to add the id to (with the scores in ARGV),
--   n_claim "uniq" hashes to claim a value in,
--   n_release "uniq" hashes to release a value from,
--   n_list keys the record owns, each replaced by the elements in ARGV: a list ("l"),
--   or a hash ("h", elements are field, value pairs); no elements removes the key
--   (a delete passes every owned key so),
--   n_absent keys that must not exist for the write to happen (guards),
--   the clock counter, when the record has a counter field (see below).
-- ARGV: n_records, then per record, packed (every count, name and score of a record in
-- one argument; only the values, which may hold any byte, one argument each):
--   the head: "<mode> <expected> <n_zrem> <n_claim> <n_release> <n_list> <n_absent>
--     <counter field or -> <hset names,...> <hdel names,...> <zadd scores,...>", where
--     mode is "s" save, "d" delete, "c" check (the version check only, nothing
--     written), expected the version read (0: must not exist), names are field names
--     (identifiers: no space, no comma) and a score "#seq" is the counter's new value;
--   the id, then one value per hset name, then n_claim claimed values, n_release
--     released values, then per owned key: its kind ("l" | "h"), n_elements, elements.
--   A counter field takes the clock counter's next value: the larger of its value + 1
--   and the server time in microseconds, so it increases per counter and follows the
--   clock across counters; so do the "#seq" scores and _owned's "@#seq".
-- Returns {"ok", new_version, counter_value, ...} (0s for a delete, counter_value 0 with
--   no counter), or, writing nothing,
--   {"conflict", record_number, stored_version} or
--   {"unique", record_number, claim_number, holder_id} or
--   {"guard", record_number, guard_number}   (numbers count from 1).

local function split(text)
  local parts = {}
  for part in string.gmatch(text, '[^,]+') do table.insert(parts, part) end
  return parts
end

local records = {}
local a, k = 2, 2
for r = 1, tonumber(ARGV[1]) do
  local mode, expected, n_zrem, n_claim, n_release, n_list, n_absent, counter, names, hdel,
    scores = string.match(ARGV[a], '^(%a) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%S+) (%S*) (%S*) (%S*)$')
  if not mode then return redis.error_reply('ERR save: malformed record head ' .. ARGV[a]) end
  local rec = {mode = mode, id = ARGV[a + 1], expected = tonumber(expected), key = KEYS[k]}
  a, k = a + 2, k + 1
  rec.hset = {}
  for _, name in ipairs(split(names)) do
    table.insert(rec.hset, name); table.insert(rec.hset, ARGV[a]); a = a + 1
  end
  rec.hdel = split(hdel)
  rec.zrem = {}
  for _ = 1, tonumber(n_zrem) do table.insert(rec.zrem, KEYS[k]); k = k + 1 end
  rec.zadd = {}
  for _, score in ipairs(split(scores)) do table.insert(rec.zadd, {KEYS[k], score}); k = k + 1 end
  rec.claims = {}
  for _ = 1, tonumber(n_claim) do table.insert(rec.claims, {KEYS[k], ARGV[a]}); k = k + 1; a = a + 1 end
  rec.releases = {}
  for _ = 1, tonumber(n_release) do
    table.insert(rec.releases, {KEYS[k], ARGV[a]}); k = k + 1; a = a + 1
  end
  rec.lists = {}
  for _ = 1, tonumber(n_list) do
    local list = {key = KEYS[k], kind = ARGV[a], elements = {}}
    k = k + 1
    local n_elements = tonumber(ARGV[a + 1]); a = a + 2
    for _ = 1, n_elements do table.insert(list.elements, ARGV[a]); a = a + 1 end
    table.insert(rec.lists, list)
  end
  rec.absent = {}
  for _ = 1, tonumber(n_absent) do table.insert(rec.absent, KEYS[k]); k = k + 1 end
  if counter ~= '-' then rec.counter, rec.counter_field = KEYS[k], counter; k = k + 1 end
  records[r] = rec
end

-- Check phase: nothing is written unless every record passes. First the type of every
-- key the write phase touches, and the parse of every number it reads.
-- (The counter's own parse is its INCRBY, the first write: see below.)
local bad = flue_expect(KEYS[1], 'string')
if bad then return bad end
for _, rec in ipairs(records) do
  bad = flue_expect(rec.key, 'hash')
  if bad then return bad end
  local stored = redis.call('HGET', rec.key, 'version')
  bad = flue_integer(rec.key, 'version', stored)
  if bad then return bad end
  rec.stored = tonumber(stored or '0')
  for _, key in ipairs(rec.zrem) do
    bad = flue_expect(key, 'zset')
    if bad then return bad end
  end
  for _, entry in ipairs(rec.zadd) do
    bad = flue_expect(entry[1], 'zset')
    if bad then return bad end
  end
  for _, pairs_ in ipairs({rec.claims, rec.releases}) do
    for _, claim in ipairs(pairs_) do
      bad = flue_expect(claim[1], 'hash')
      if bad then return bad end
    end
  end
  if rec.counter then
    bad = flue_expect(rec.counter, 'string')
      or flue_integer(rec.counter, 'value', redis.call('GET', rec.counter))
    if bad then return bad end
  end
  for _, list in ipairs(rec.lists) do  -- no elements: the key is deleted, whatever it is
    if #list.elements > 0 then
      bad = flue_expect(list.key, list.kind == 'h' and 'hash' or 'list')
      if bad then return bad end
    end
  end
end
local releasing, claiming = {}, {}
local saves = 0
for r, rec in ipairs(records) do
  if rec.stored ~= rec.expected then return {'conflict', r, rec.stored} end
  if rec.mode == 's' then saves = saves + 1 end
  for g, key in ipairs(rec.absent) do
    if redis.call('EXISTS', key) == 1 then return {'guard', r, g} end
  end
  for _, rel in ipairs(rec.releases) do releasing[rel[1] .. '\0' .. rel[2]] = rec.id end
end
for r, rec in ipairs(records) do
  for c, claim in ipairs(rec.claims) do
    local slot = claim[1] .. '\0' .. claim[2]
    local holder = redis.call('HGET', claim[1], claim[2])
    if holder and holder ~= rec.id and releasing[slot] ~= holder then
      return {'unique', r, c, holder}
    end
    if claiming[slot] and claiming[slot] ~= rec.id then
      return {'unique', r, c, claiming[slot]}
    end
    claiming[slot] = rec.id
  end
end

-- Write phase. The versions first, in one INCRBY: the counter is read (and refused when
-- it holds no integer) before anything else is written.
local versions = {'ok'}
local next_version = 0
if saves > 0 then
  local counted = redis.pcall('INCRBY', KEYS[1], saves)
  if type(counted) == 'table' and counted.err then
    return redis.error_reply('FLUE_CORRUPT ' .. KEYS[1] .. ' value '
      .. tostring(redis.call('GET', KEYS[1])))
  end
  next_version = counted - saves + 1
end
-- A counter field takes its value here, after every check passed (a refused write
-- consumes no number): '#seq' in the hash values, the scores and _owned becomes it.
-- (A whole number, as Python's format_score writes it, so _owned stays byte-equal to
-- its encoding. Numbers are written with %d: Lua's own conversion keeps 14 digits, a
-- clock has 16.)
local function with_seq(text, seq) return (string.gsub(text, '@#seq', '@' .. seq)) end
local function next_tick(counter)
  local now = redis.call('TIME')
  local clock = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local value = math.max(tonumber(redis.call('GET', counter) or '0') + 1, clock)
  local text = string.format('%d', value)
  redis.call('SET', counter, text)
  return value, text
end
for _, rec in ipairs(records) do
  for _, rel in ipairs(rec.releases) do
    if redis.call('HGET', rel[1], rel[2]) == rec.id then redis.call('HDEL', rel[1], rel[2]) end
  end
  for _, key in ipairs(rec.zrem) do redis.call('ZREM', key, rec.id) end
  for _, list in ipairs(rec.lists) do
    redis.call('DEL', list.key)
    local add = list.kind == 'h' and 'HSET' or 'RPUSH'
    for i = 1, #list.elements, 1000 do
      redis.call(add, list.key, unpack(list.elements, i, math.min(i + 999, #list.elements)))
    end
  end
  if rec.mode == 'c' then
    table.insert(versions, rec.expected)
    table.insert(versions, 0)
  elseif rec.mode == 'd' then
    redis.call('DEL', rec.key)
    table.insert(versions, 0)
    table.insert(versions, 0)
  else
    local version = next_version
    next_version = next_version + 1
    local seq, seq_text = 0, '0'
    if rec.counter then
      seq, seq_text = next_tick(rec.counter)
      for i = 1, #rec.hset, 2 do
        if rec.hset[i] == rec.counter_field then rec.hset[i + 1] = seq_text
        elseif rec.hset[i] == '_owned' then rec.hset[i + 1] = with_seq(rec.hset[i + 1], seq_text) end
      end
    end
    if #rec.hdel > 0 then redis.call('HDEL', rec.key, unpack(rec.hdel)) end
    table.insert(rec.hset, 'version')
    table.insert(rec.hset, version)
    redis.call('HSET', rec.key, unpack(rec.hset))
    for _, entry in ipairs(rec.zadd) do
      redis.call('ZADD', entry[1], entry[2] == '#seq' and seq_text or entry[2], rec.id)
    end
    for _, claim in ipairs(rec.claims) do redis.call('HSET', claim[1], claim[2], rec.id) end
    table.insert(versions, version)
    table.insert(versions, seq)
  end
end
return versions
