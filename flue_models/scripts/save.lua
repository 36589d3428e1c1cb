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
--   n_absent keys that must not exist for the write to happen (guards).
-- ARGV: n_records, then per record:
--   mode ("s" save, "d" delete, "c" check: the version check only, nothing written),
--   id, expected version (0: must not exist),
--   n_hset, field, value, ...,   n_hdel, field, ...,
--   n_zrem,   n_zadd, score, ...,   n_claim, value, ...,   n_release, value, ...,
--   n_list, then per owned key: kind ("l" | "h"), n_elements, element, ...,   n_absent,
--   counter field ("" for none; else the next KEY is a clock counter whose next value
--   becomes that field, the scores given as "#seq", and the "#seq" scores in _owned's
--   JSON: the larger of its value + 1 and the server time in microseconds, so it
--   increases per counter and follows the clock across counters)
-- Returns {"ok", new_version, counter_value, ...} (0s for a delete, counter_value 0 with
--   no counter), or, writing nothing,
--   {"conflict", record_number, stored_version} or
--   {"unique", record_number, claim_number, holder_id} or
--   {"guard", record_number, guard_number}   (numbers count from 1).

local records = {}
local a, k = 2, 2
for r = 1, tonumber(ARGV[1]) do
  local rec = {mode = ARGV[a], id = ARGV[a + 1], expected = tonumber(ARGV[a + 2]), key = KEYS[k]}
  a, k = a + 3, k + 1
  rec.hset = {}
  for _ = 1, tonumber(ARGV[a]) do
    table.insert(rec.hset, ARGV[a + 1]); table.insert(rec.hset, ARGV[a + 2]); a = a + 2
  end
  a = a + 1
  rec.hdel = {}
  for _ = 1, tonumber(ARGV[a]) do table.insert(rec.hdel, ARGV[a + 1]); a = a + 1 end
  a = a + 1
  rec.zrem = {}
  for _ = 1, tonumber(ARGV[a]) do table.insert(rec.zrem, KEYS[k]); k = k + 1 end
  a = a + 1
  rec.zadd = {}
  local n_zadd = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n_zadd do table.insert(rec.zadd, {KEYS[k], ARGV[a]}); k = k + 1; a = a + 1 end
  rec.claims = {}
  local n_claim = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n_claim do table.insert(rec.claims, {KEYS[k], ARGV[a]}); k = k + 1; a = a + 1 end
  rec.releases = {}
  local n_release = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n_release do
    table.insert(rec.releases, {KEYS[k], ARGV[a]}); k = k + 1; a = a + 1
  end
  rec.lists = {}
  local n_list = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n_list do
    local list = {key = KEYS[k], kind = ARGV[a], elements = {}}
    k = k + 1
    local n_elements = tonumber(ARGV[a + 1]); a = a + 2
    for _ = 1, n_elements do table.insert(list.elements, ARGV[a]); a = a + 1 end
    table.insert(rec.lists, list)
  end
  rec.absent = {}
  local n_absent = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n_absent do table.insert(rec.absent, KEYS[k]); k = k + 1 end
  if ARGV[a] ~= '' then rec.counter, rec.counter_field = KEYS[k], ARGV[a]; k = k + 1 end
  a = a + 1
  records[r] = rec
end

-- Check phase: nothing is written unless every record passes. First the type of every
-- key the write phase touches, and the parse of every number it reads.
local bad = flue_expect(KEYS[1], 'string')
  or flue_integer(KEYS[1], 'value', redis.call('GET', KEYS[1]))
if bad then return bad end
for _, rec in ipairs(records) do
  bad = flue_expect(rec.key, 'hash')
    or flue_integer(rec.key, 'version', redis.call('HGET', rec.key, 'version'))
  if bad then return bad end
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
for r, rec in ipairs(records) do
  local stored = tonumber(redis.call('HGET', rec.key, 'version') or '0')
  if stored ~= rec.expected then return {'conflict', r, stored} end
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

-- Write phase.
local versions = {'ok'}
-- A counter field takes its value here, after every check passed (a refused write
-- consumes no number): '#seq' in the hash values, the scores and _owned becomes it.
-- (As Python writes a float score: "7.0", so _owned stays byte-equal to its encoding.
-- Numbers are written with %d: Lua's own conversion keeps 14 digits, a clock has 16.)
local function with_seq(text, seq) return (string.gsub(text, '"#seq"', seq .. '.0')) end
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
    local version = redis.call('INCR', KEYS[1])
    local seq, seq_text = 0, '0'
    if rec.counter then
      seq, seq_text = next_tick(rec.counter)
      for i = 1, #rec.hset, 2 do
        if rec.hset[i] == rec.counter_field then rec.hset[i + 1] = seq_text
        elseif rec.hset[i] == '_owned' then rec.hset[i + 1] = with_seq(rec.hset[i + 1], seq_text) end
      end
    end
    if #rec.hdel > 0 then redis.call('HDEL', rec.key, unpack(rec.hdel)) end
    if #rec.hset > 0 then redis.call('HSET', rec.key, unpack(rec.hset)) end
    redis.call('HSET', rec.key, 'version', version)
    for _, entry in ipairs(rec.zadd) do
      redis.call('ZADD', entry[1], entry[2] == '#seq' and seq_text or entry[2], rec.id)
    end
    for _, claim in ipairs(rec.claims) do redis.call('HSET', claim[1], claim[2], rec.id) end
    table.insert(versions, version)
    table.insert(versions, seq)
  end
end
return versions
