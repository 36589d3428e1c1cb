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

local function split(text)
  local parts, n = {}, 0
  for part in gmatch(text, '[^,]+') do n = n + 1; parts[n] = part end
  return parts
end

local records = {}
local a, k = 2, 2
for r = 1, tonumber(ARGV[1]) do
  local mode, expected, n_zrem, n_claim, n_release, n_list, n_absent, counter, names, hdel,
    scores = match(ARGV[a], '^(%a) (%d+) (%d+) (%d+) (%d+) (%d+) (%d+) (%S+) (%S*) (%S*) (%S*)$')
  if not mode then return redis.error_reply('ERR save: malformed record head ' .. ARGV[a]) end
  local rec = {mode = mode, id = ARGV[a + 1], expected = tonumber(expected), key = KEYS[k]}
  a, k = a + 2, k + 1
  local hset, n = {}, 0
  for name in gmatch(names, '[^,]+') do
    hset[n + 1], hset[n + 2] = name, ARGV[a]
    n, a = n + 2, a + 1
  end
  rec.hset = hset
  rec.hdel = split(hdel)
  local zrem = {}
  for i = 1, tonumber(n_zrem) do zrem[i] = KEYS[k]; k = k + 1 end
  rec.zrem = zrem
  local zadd = {}
  for score in gmatch(scores, '[^,]+') do zadd[#zadd + 1] = {KEYS[k], score}; k = k + 1 end
  rec.zadd = zadd
  local claims, releases = {}, {}
  for i = 1, tonumber(n_claim) do claims[i] = {KEYS[k], ARGV[a]}; k = k + 1; a = a + 1 end
  for i = 1, tonumber(n_release) do releases[i] = {KEYS[k], ARGV[a]}; k = k + 1; a = a + 1 end
  rec.claims, rec.releases = claims, releases
  rec.lists = {}
  for i = 1, tonumber(n_list) do
    local list = {key = KEYS[k], kind = ARGV[a], elements = {}}
    k = k + 1
    local n_elements = tonumber(ARGV[a + 1]); a = a + 2
    for e = 1, n_elements do list.elements[e] = ARGV[a]; a = a + 1 end
    rec.lists[i] = list
  end
  rec.absent = {}
  for i = 1, tonumber(n_absent) do rec.absent[i] = KEYS[k]; k = k + 1 end
  if counter ~= '-' then rec.counter, rec.counter_field = KEYS[k], counter; k = k + 1 end
  records[r] = rec
end

-- Check phase: nothing is written unless every record passes. First the type of every
-- key the write phase touches, and the parse of every number it reads. A row's type is
-- checked by the read of its version; the collection's counter by its INCRBY, the first
-- write (see below); every other key by TYPE.
local bad
for _, rec in ipairs(records) do
  local stored = redis.pcall('HGET', rec.key, 'version')
  if type(stored) == 'table' then return flue_wrong(rec.key, 'hash') end
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
for r, rec in ipairs(records) do
  if rec.stored ~= rec.expected then return {'conflict', r, rec.stored} end
  if rec.mode == 's' then saves = saves + 1 end
  for g, key in ipairs(rec.absent) do
    if call('EXISTS', key) == 1 then return {'guard', r, g} end
  end
  for _, rel in ipairs(rec.releases) do releasing[rel[1] .. '\0' .. rel[2]] = rec.id end
end
for r, rec in ipairs(records) do
  for c, claim in ipairs(rec.claims) do
    local slot = claim[1] .. '\0' .. claim[2]
    local holder = call('HGET', claim[1], claim[2])
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
for _, rec in ipairs(records) do
  for _, rel in ipairs(rec.releases) do
    if call('HGET', rel[1], rel[2]) == rec.id then call('HDEL', rel[1], rel[2]) end
  end
  for _, key in ipairs(rec.zrem) do call('ZREM', key, rec.id) end
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
    if rec.counter then
      seq, seq_text = next_tick(rec.counter)
      for i = 1, #rec.hset, 2 do
        if rec.hset[i] == rec.counter_field then rec.hset[i + 1] = seq_text
        elseif rec.hset[i] == '_owned' then rec.hset[i + 1] = with_seq(rec.hset[i + 1], seq_text) end
      end
    end
    if #rec.hdel > 0 then call('HDEL', rec.key, unpack(rec.hdel)) end
    rec.hset[#rec.hset + 1] = 'version'
    rec.hset[#rec.hset + 1] = version
    call('HSET', rec.key, unpack(rec.hset))
    for _, entry in ipairs(rec.zadd) do
      call('ZADD', entry[1], entry[2] == '#seq' and seq_text or entry[2], rec.id)
    end
    for _, claim in ipairs(rec.claims) do call('HSET', claim[1], claim[2], rec.id) end
    versions[#versions + 1] = version
    versions[#versions + 1] = seq
  end
end
return versions
