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

local call, match, gmatch = redis.call, string.match, string.gmatch
-- Every list of a record that has no element is this one table (never written to), and
-- a record's table is made whole in one constructor: no table grows on the hot path.
local EMPTY = {}

local function words(text)  -- comma-separated names
  if text == '' then return EMPTY end
  local parts, n = {}, 0
  for part in gmatch(text, '[^,]+') do n = n + 1; parts[n] = part end
  return parts
end

-- Per record: zadd, claims and releases are flat lists of key, value pairs.
local records = {}
local a, k = 2, 2

local function next_keys(count)  -- the next `count` KEYS
  local n = tonumber(count)
  if n == 0 then return EMPTY end
  local taken = {}
  for i = 1, n do taken[i] = KEYS[k]; k = k + 1 end
  return taken
end

local function next_pairs(count)  -- the next `count` KEYS, each with the next ARGV
  local n = tonumber(count)
  if n == 0 then return EMPTY end
  local taken = {}
  for i = 1, 2 * n, 2 do taken[i], taken[i + 1] = KEYS[k], ARGV[a]; k, a = k + 1, a + 1 end
  return taken
end

for r = 1, tonumber(ARGV[1]) do
  local mode, expected, n_zrem, n_claim, n_release, n_list, n_absent, counter, names, hdel,
    scores = match(ARGV[a], '^(%a) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%S+) (%S*) (%S*) (%S*)$')
  if not mode then return redis.error_reply('ERR save: malformed record head ' .. ARGV[a]) end
  local id, key = ARGV[a + 1], KEYS[k]
  a, k = a + 2, k + 1
  local hset, n = {}, 0
  for name in gmatch(names, '[^,]+') do
    hset[n + 1], hset[n + 2] = name, ARGV[a]
    n, a = n + 2, a + 1
  end
  local zrem = next_keys(n_zrem)
  local zadd = EMPTY
  if scores ~= '' then
    zadd, n = {}, 0
    for score in gmatch(scores, '[^,]+') do
      zadd[n + 1], zadd[n + 2] = KEYS[k], score
      n, k = n + 2, k + 1
    end
  end
  local claims = next_pairs(n_claim)
  local releases = next_pairs(n_release)
  local lists = EMPTY
  n = tonumber(n_list)
  if n > 0 then
    lists = {}
    for i = 1, n do
      local list = {key = KEYS[k], kind = ARGV[a], elements = {}}
      k = k + 1
      local n_elements = tonumber(ARGV[a + 1]); a = a + 2
      for e = 1, n_elements do list.elements[e] = ARGV[a]; a = a + 1 end
      lists[i] = list
    end
  end
  local absent = next_keys(n_absent)
  local counter_key, counter_field = nil, nil
  if counter ~= '-' then counter_key, counter_field = KEYS[k], counter; k = k + 1 end
  records[r] = {mode = mode, id = id, expected = tonumber(expected), key = key, hset = hset,
    hdel = words(hdel), zrem = zrem, zadd = zadd, claims = claims, releases = releases,
    lists = lists, absent = absent, counter = counter_key, counter_field = counter_field,
    stored = 0}
end

-- Check phase: nothing is written unless every record passes. First the type of every
-- key the write phase touches, and the parse of every number it reads. A row's type is
-- checked by the read of its version; the collection's counter by its INCRBY, the first
-- write (see below); every other key by TYPE, once per key and type in the call (the
-- records of a batch share their index sets).
local bad
local typed = {}
local function expect(key, wanted)
  if typed[key] == wanted then return nil end
  typed[key] = wanted
  return flue_expect(key, wanted)
end
for r = 1, #records do
  local rec = records[r]
  local stored = redis.pcall('HGET', rec.key, 'version')
  if type(stored) == 'table' then return flue_wrong(rec.key, 'hash') end
  bad = flue_integer(rec.key, 'version', stored)
  if bad then return bad end
  rec.stored = tonumber(stored or '0')
  local zrem, zadd, claims, releases = rec.zrem, rec.zadd, rec.claims, rec.releases
  for i = 1, #zrem do
    bad = expect(zrem[i], 'zset')
    if bad then return bad end
  end
  for i = 1, #zadd, 2 do
    bad = expect(zadd[i], 'zset')
    if bad then return bad end
  end
  for i = 1, #claims, 2 do
    bad = expect(claims[i], 'hash')
    if bad then return bad end
  end
  for i = 1, #releases, 2 do
    bad = expect(releases[i], 'hash')
    if bad then return bad end
  end
  if rec.counter then
    bad = flue_expect(rec.counter, 'string')
      or flue_integer(rec.counter, 'value', call('GET', rec.counter))
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
for r = 1, #records do
  local rec = records[r]
  if rec.stored ~= rec.expected then return {'conflict', r, rec.stored} end
  if rec.mode == 's' then saves = saves + 1 end
  local absent, releases = rec.absent, rec.releases
  for g = 1, #absent do
    if call('EXISTS', absent[g]) == 1 then return {'guard', r, g} end
  end
  for i = 1, #releases, 2 do releasing[releases[i] .. '\0' .. releases[i + 1]] = rec.id end
end
for r = 1, #records do
  local rec = records[r]
  local claims = rec.claims
  for i = 1, #claims, 2 do
    local slot = claims[i] .. '\0' .. claims[i + 1]
    local holder = call('HGET', claims[i], claims[i + 1])
    if holder and holder ~= rec.id and releasing[slot] ~= holder then
      return {'unique', r, (i + 1) / 2, holder}
    end
    if claiming[slot] and claiming[slot] ~= rec.id then
      return {'unique', r, (i + 1) / 2, claiming[slot]}
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
  if type(counted) == 'table' then  -- refused: nothing is written yet
    if call('TYPE', KEYS[1])['ok'] ~= 'string' then return flue_wrong(KEYS[1], 'string') end
    return redis.error_reply('FLUE_CORRUPT ' .. KEYS[1] .. ' value '
      .. tostring(call('GET', KEYS[1])))
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
  local now = call('TIME')
  local clock = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local value = math.max(tonumber(call('GET', counter) or '0') + 1, clock)
  local text = string.format('%d', value)
  call('SET', counter, text)
  return value, text
end
for r = 1, #records do
  local rec = records[r]
  local id, zrem, releases = rec.id, rec.zrem, rec.releases
  for i = 1, #releases, 2 do
    if call('HGET', releases[i], releases[i + 1]) == id then
      call('HDEL', releases[i], releases[i + 1])
    end
  end
  for i = 1, #zrem do call('ZREM', zrem[i], id) end
  for _, list in ipairs(rec.lists) do
    call('DEL', list.key)
    local add = list.kind == 'h' and 'HSET' or 'RPUSH'
    for i = 1, #list.elements, 1000 do
      call(add, list.key, unpack(list.elements, i, math.min(i + 999, #list.elements)))
    end
  end
  if rec.mode == 'c' then
    versions[#versions + 1] = rec.expected
    versions[#versions + 1] = 0
  elseif rec.mode == 'd' then
    call('DEL', rec.key)
    versions[#versions + 1] = 0
    versions[#versions + 1] = 0
  else
    local version = next_version
    next_version = next_version + 1
    local seq, seq_text = 0, '0'
    local hset = rec.hset
    if rec.counter then
      seq, seq_text = next_tick(rec.counter)
      for i = 1, #hset, 2 do
        if hset[i] == rec.counter_field then hset[i + 1] = seq_text
        elseif hset[i] == '_owned' then hset[i + 1] = with_seq(hset[i + 1], seq_text) end
      end
    end
    if #rec.hdel > 0 then call('HDEL', rec.key, unpack(rec.hdel)) end
    hset[#hset + 1] = 'version'
    hset[#hset + 1] = version
    call('HSET', rec.key, unpack(hset))
    local zadd, claims = rec.zadd, rec.claims
    for i = 1, #zadd, 2 do
      call('ZADD', zadd[i], zadd[i + 1] == '#seq' and seq_text or zadd[i + 1], id)
    end
    for i = 1, #claims, 2 do call('HSET', claims[i], claims[i + 1], id) end
    versions[#versions + 1] = version
    versions[#versions + 1] = seq
  end
end
return versions
