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
-- ARGV: n_records, then per record:
--   the head, every count of the record in one binary string, read by one C call:
--     struct.pack(">c1I4I4I4I4I4I4I4I4B", mode, n_hset, n_hdel, n_zrem, n_zadd, n_claim,
--     n_release, n_list, n_absent, has_counter), mode "s" save, "d" delete, "c" check
--     (the version check only, nothing written);
--   the expected version (the one read; 0: must not exist), the id;
--   n_hset field, value pairs, passed to HSET as they are; n_hdel field names;
--   n_zadd scores ("#seq": the counter's new value); n_claim claimed values; n_release
--   released values; per owned key: its kind ("l" | "h"), n_elements, the elements;
--   the counter field, when has_counter is 1.
--   A counter field takes the clock counter's next value: the larger of its value + 1
--   and the server time in microseconds, so it increases per counter and follows the
--   clock across counters; so do the "#seq" scores and _owned's "@#seq".
-- Nothing is parsed by pattern and nothing is copied per field: a record is read where
-- it lies in KEYS and ARGV (one small array per record says where), and its fields go
-- to HSET by unpack.
-- Returns {"ok", new_version, counter_value, ...} (0s for a delete, counter_value 0 with
--   no counter), or, writing nothing,
--   {"conflict", record_number, stored_version} or
--   {"unique", record_number, claim_number, holder_id} or
--   {"guard", record_number, guard_number}   (numbers count from 1).

local call, unpack, head_of = redis.call, unpack, struct.unpack
local HEAD = '>c1I4I4I4I4I4I4I4I4B'
local n_records = tonumber(ARGV[1])
if not n_records then return redis.error_reply('ERR save: malformed record count') end

-- Per record, one array made by one constructor: where its ARGV (a) and KEYS (k) begin,
-- where its lists end (the counter field's place), then its head's fields in order.
-- Every phase takes them into locals with one unpack.
local records = {}
local a, k = 2, 2
for r = 1, n_records do
  local rec = {a, k, 0, head_of(HEAD, ARGV[a])}  -- a head too short is refused by struct
  local _, _, _, _, n_hset, n_hdel, n_zrem, n_zadd, n_claim, n_release, n_list, n_absent,
    has_counter = unpack(rec)
  local e = a + 3 + 2 * n_hset + n_hdel + n_zadd + n_claim + n_release
  for _ = 1, n_list do e = e + 2 + tonumber(ARGV[e + 1]) end
  rec[3] = e
  records[r] = rec
  a = e + has_counter
  k = k + 1 + n_zrem + n_zadd + n_claim + n_release + n_list + n_absent + has_counter
end
if a ~= #ARGV + 1 or k ~= #KEYS + 1 then  -- the heads must account for every argument
  return redis.error_reply('ERR save: the heads name ' .. (k - 1) .. ' keys and ' .. (a - 1)
    .. ' arguments, the call has ' .. #KEYS .. ' and ' .. #ARGV)
end

-- Check phase: nothing is written unless every record passes. First the type of every
-- key the write phase touches, and the parse of every number it reads. A row's type is
-- checked by the read of its version; the collection's counter by its INCRBY, the first
-- write (see below); every other key by an O(1) read of its type's (flue_expect), once
-- per key and type in the call: the records of a batch share their index sets (a lone
-- record's keys are each named once, and checked without that bookkeeping).
local bad
local typed = n_records > 1 and {} or nil
local function expect(first, last, wanted)  -- nil when KEYS[first..last] all fit
  for i = first, last do
    local key = KEYS[i]
    if not typed then
      bad = flue_expect(key, wanted)
      if bad then return bad end
    elseif typed[key] ~= wanted then
      typed[key] = wanted
      bad = flue_expect(key, wanted)
      if bad then return bad end
    end
  end
  return nil
end
local stored = {}  -- per record, the version found (0: none)
for r = 1, n_records do
  local a, k, _, _, n_hset, n_hdel, n_zrem, n_zadd, n_claim, n_release, n_list, n_absent,
    has_counter = unpack(records[r])
  local key = KEYS[k]
  local found = redis.pcall('HGET', key, 'version')
  if type(found) == 'table' then return flue_wrong(key, 'hash') end
  if found ~= ARGV[a + 1] then  -- equal to the expected text: a whole number already
    bad = flue_integer(key, 'version', found)
    if bad then return bad end
  end
  stored[r] = tonumber(found or '0')
  local z = k + 1 + n_zrem + n_zadd  -- the first claim key
  bad = expect(k + 1, z - 1, 'zset') or expect(z, z + n_claim + n_release - 1, 'hash')
  if bad then return bad end
  local l = a + 3 + 2 * n_hset + n_hdel + n_zadd + n_claim + n_release
  z = z + n_claim + n_release
  for i = z, z + n_list - 1 do  -- no elements: the key is deleted, whatever it is
    if ARGV[l + 1] ~= '0' then
      bad = flue_expect(KEYS[i], ARGV[l] == 'h' and 'hash' or 'list')
      if bad then return bad end
    end
    l = l + 2 + tonumber(ARGV[l + 1])
  end
  if has_counter == 1 then
    local counter = KEYS[z + n_list + n_absent]
    bad = flue_expect(counter, 'string')
      or flue_integer(counter, 'value', call('GET', counter))
    if bad then return bad end
  end
end
local releasing, claiming = {}, {}
local saves = 0
for r = 1, n_records do
  local a, k, _, mode, n_hset, n_hdel, n_zrem, n_zadd, n_claim, n_release, n_list, n_absent =
    unpack(records[r])
  if stored[r] ~= tonumber(ARGV[a + 1]) then return {'conflict', r, stored[r]} end
  if mode == 's' then saves = saves + 1 end
  local g = k + 1 + n_zrem + n_zadd + n_claim + n_release + n_list  -- the first guard
  for i = g, g + n_absent - 1 do
    if call('EXISTS', KEYS[i]) == 1 then return {'guard', r, i - g + 1} end
  end
  local id, rk, rv = ARGV[a + 2], k + 1 + n_zrem + n_zadd + n_claim,
    a + 3 + 2 * n_hset + n_hdel + n_zadd + n_claim
  for i = 0, n_release - 1 do releasing[KEYS[rk + i] .. '\0' .. ARGV[rv + i]] = id end
end
for r = 1, n_records do
  local a, k, _, _, n_hset, n_hdel, n_zrem, n_zadd, n_claim = unpack(records[r])
  local id, ck, cv = ARGV[a + 2], k + 1 + n_zrem + n_zadd, a + 3 + 2 * n_hset + n_hdel + n_zadd
  for i = 0, n_claim - 1 do
    local key, value = KEYS[ck + i], ARGV[cv + i]
    local slot = key .. '\0' .. value
    local holder = call('HGET', key, value)
    if holder and holder ~= id and releasing[slot] ~= holder then
      return {'unique', r, i + 1, holder}
    end
    if claiming[slot] and claiming[slot] ~= id then
      return {'unique', r, i + 1, claiming[slot]}
    end
    claiming[slot] = id
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
local function next_tick(counter)
  local now = call('TIME')
  local clock = tonumber(now[1]) * 1000000 + tonumber(now[2])
  local value = math.max(tonumber(call('GET', counter) or '0') + 1, clock)
  local text = string.format('%d', value)
  call('SET', counter, text)
  return value, text
end
-- ARGV[first..last], field, value pairs, with the counter `field` and _owned's '@#seq'
-- taking the counter's value (a new list: ARGV is not written to).
local function with_seq(first, last, field, seq_text)
  local fields = {unpack(ARGV, first, last)}
  for i = 1, #fields, 2 do
    if fields[i] == field then
      fields[i + 1] = seq_text
    elseif fields[i] == '_owned' then
      fields[i + 1] = string.gsub(fields[i + 1], '@#seq', '@' .. seq_text)
    end
  end
  return fields
end
for r = 1, n_records do
  local a, k, e, mode, n_hset, n_hdel, n_zrem, n_zadd, n_claim, n_release, n_list, n_absent,
    has_counter = unpack(records[r])
  local key, id = KEYS[k], ARGV[a + 2]
  -- ARGV from h: the hset pairs, the hdel names, the scores, claims, releases, lists
  local h = a + 3
  local s = h + 2 * n_hset + n_hdel
  local rv, rk = s + n_zadd + n_claim, k + 1 + n_zrem + n_zadd + n_claim
  for i = 0, n_release - 1 do
    if call('HGET', KEYS[rk + i], ARGV[rv + i]) == id then
      call('HDEL', KEYS[rk + i], ARGV[rv + i])
    end
  end
  for i = k + 1, k + n_zrem do call('ZREM', KEYS[i], id) end
  local l = rv + n_release
  for i = rk + n_release, rk + n_release + n_list - 1 do
    local last = l + 1 + tonumber(ARGV[l + 1])
    call('DEL', KEYS[i])
    local add = ARGV[l] == 'h' and 'HSET' or 'RPUSH'
    for first = l + 2, last, 1000 do
      call(add, KEYS[i], unpack(ARGV, first, math.min(first + 999, last)))
    end
    l = last + 1
  end
  if mode == 'c' then
    versions[#versions + 1] = tonumber(ARGV[a + 1])
    versions[#versions + 1] = 0
  elseif mode == 'd' then
    call('DEL', key)
    versions[#versions + 1] = 0
    versions[#versions + 1] = 0
  else
    local version = next_version
    next_version = next_version + 1
    local seq, seq_text = 0, '0'
    if n_hdel > 0 then call('HDEL', key, unpack(ARGV, h + 2 * n_hset, s - 1)) end
    if has_counter == 1 then
      seq, seq_text = next_tick(KEYS[rk + n_release + n_list + n_absent])
      local fields = with_seq(h, s - n_hdel - 1, ARGV[e], seq_text)
      call('HSET', key, 'version', version, unpack(fields))
    else
      call('HSET', key, 'version', version, unpack(ARGV, h, h + 2 * n_hset - 1))
    end
    local zk = k + 1 + n_zrem
    for i = 0, n_zadd - 1 do
      local score = ARGV[s + i]
      call('ZADD', KEYS[zk + i], score == '#seq' and seq_text or score, id)
    end
    local ck, cv = zk + n_zadd, s + n_zadd
    for i = 0, n_claim - 1 do call('HSET', KEYS[ck + i], ARGV[cv + i], id) end
    versions[#versions + 1] = version
    versions[#versions + 1] = seq
  end
end
return versions
