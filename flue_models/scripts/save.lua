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
-- ARGV: per record (as many as the heads account for):
--   the head, every count of the record in one binary string, read by one C call:
--     struct.pack(">c1I4I4I4I4I4I4I4I4B", mode, n_hset, n_hdel, n_zrem, n_zadd, n_claim,
--     n_release, n_list, n_absent, stamped), mode "s" save, "d" delete, "c" check
--     (the version check only, nothing written); stamped 0, or 1 for a counter field,
--     2 for a clock field, 3 for both;
--   the expected version (the one read; 0: must not exist), the id;
--   n_hset field, value pairs, passed to HSET as they are; n_hdel field names;
--   n_zadd scores ("#seq": the counter's new value); n_claim claimed values; n_release
--   released values; per owned key: its kind ("l" | "h"), n_elements, the elements;
--   the counter field's name (stamped 1 or 3), then the clock field's (2 or 3).
--   A counter field takes the clock counter's next value: the larger of its value + 1
--   and the server time in microseconds, so it increases per counter and follows the
--   clock across counters; so do the "#seq" scores and _owned's "@#seq".
--   A clock field (a datetime) takes the server's time when the script writes, as the
--   Python side encodes it (flue_now); the "#seq" scores and _owned's "@#seq" take its
--   score. With a counter field too, it takes the counter's value read as microseconds
--   since the epoch (the server's time, or just after the record before it), and the
--   scores are the counter's (the clock field then scores nothing).
-- Nothing is parsed by pattern and nothing is copied per field: a record is read where
-- it lies in KEYS and ARGV (one small array per record says where), and its fields go
-- to HSET by unpack. A call makes no function and no table it does not need: each is
-- an allocation the server pays for on every call.
-- Returns {"ok", new_version, stamp, ...}: the stamp is the counter's value, or the clock
--   field's time in microseconds since the epoch (0s for a delete, stamp 0 with neither),
--   or, writing nothing,
--   {"conflict", record_number, stored_version} or
--   {"unique", record_number, claim_number, holder_id} or
--   {"guard", record_number, guard_number}   (numbers count from 1).

local call, unpack, head_of = redis.call, unpack, struct.unpack
local HEAD = '>c1I4I4I4I4I4I4I4I4B'

-- Where each part of each record begins, computed once here; every phase reads a part
-- as the range up to the next part's start. ARGV: a the head (a + 1 the expected
-- version, a + 2 the id), h the hset pairs, d the hdel names, s the zadd scores, cv the
-- claimed values, rv the released values, l the owned keys' elements, e the counter
-- field. KEYS: k the row, then the sets to leave, za the sets to add to, ck the claim
-- hashes, rk the release hashes, lk the owned keys, gk the guards, ctr the counter.
-- One array per record, made by one constructor; a phase takes it with one unpack.
local records = {}
local n_records, n_args = 0, #ARGV
local a, k = 1, 2
while a <= n_args do
  local mode, n_hset, n_hdel, n_zrem, n_zadd, n_claim, n_release, n_list, n_absent,
    stamped = head_of(HEAD, ARGV[a])  -- a head too short is refused by struct
  if stamped > 3 then return redis.error_reply('ERR save: malformed head') end
  local h = a + 3
  local d = h + 2 * n_hset
  local s = d + n_hdel
  local cv = s + n_zadd
  local rv = cv + n_claim
  local l = rv + n_release
  local e = l
  for _ = 1, n_list do e = e + 2 + tonumber(ARGV[e + 1]) end
  local za = k + 1 + n_zrem
  local ck = za + n_zadd
  local rk = ck + n_claim
  local lk = rk + n_release
  local gk = lk + n_list
  local ctr = gk + n_absent
  n_records = n_records + 1
  records[n_records] = {mode, a, h, d, s, cv, rv, l, e, k, za, ck, rk, lk, gk, ctr, stamped}
  a, k = e + (stamped == 3 and 2 or stamped > 0 and 1 or 0), ctr + stamped % 2
end
if a ~= n_args + 1 or k ~= #KEYS + 1 then  -- the heads must account for every argument
  return redis.error_reply('ERR save: the heads name ' .. (k - 1) .. ' keys and ' .. (a - 1)
    .. ' arguments, the call has ' .. #KEYS .. ' and ' .. n_args)
end

-- Check phase: nothing is written unless every record passes. First the type of every
-- key the write phase touches, and the parse of every number it reads. A row's type is
-- checked by the read of its version; the collection's counter by its INCRBY, the first
-- write (see below); every other key by an O(1) read of its type's (flue_expect), once
-- per key and type in the call: the records of a batch share their index sets (a lone
-- record's keys are each named once, and checked without that bookkeeping).
local bad
local typed = n_records > 1 and {} or nil
local stored = {}  -- per record, the version found (0: none), or true: the one expected
for r = 1, n_records do
  local _, a, _, _, _, _, _, l, _, k, _, ck, _, lk, gk, ctr, stamped = unpack(records[r])
  local key, expected = KEYS[k], ARGV[a + 1]
  local found = redis.pcall('HGET', key, 'version')
  if type(found) == 'table' then return flue_wrong(key, 'hash') end
  if found == expected or (not found and expected == '0') then
    stored[r] = true  -- as expected (the text of a whole number: nothing to parse)
  else
    bad = flue_integer(key, 'version', found)
    if bad then return bad end
    stored[r] = tonumber(found or '0')
  end
  for i = k + 1, lk - 1 do  -- the sets (zset), then the claim and release hashes
    local key, wanted = KEYS[i], i < ck and 'zset' or 'hash'
    if not typed or typed[key] ~= wanted then
      if typed then typed[key] = wanted end
      bad = flue_expect(key, wanted)
      if bad then return bad end
    end
  end
  for i = lk, gk - 1 do  -- no elements: the key is deleted, whatever it is
    if ARGV[l + 1] ~= '0' then
      bad = flue_expect(KEYS[i], ARGV[l] == 'h' and 'hash' or 'list')
      if bad then return bad end
    end
    l = l + 2 + tonumber(ARGV[l + 1])
  end
  if stamped % 2 == 1 then  -- a counter field
    bad = flue_expect(KEYS[ctr], 'string')
      or flue_integer(KEYS[ctr], 'value', call('GET', KEYS[ctr]))
    if bad then return bad end
  end
end
local releasing  -- made by the first release: "key\0value" -> the id releasing it
local saves = 0
for r = 1, n_records do
  local mode, a, _, _, _, _, rv, _, _, _, _, _, rk, lk, gk, ctr = unpack(records[r])
  if stored[r] ~= true and stored[r] ~= tonumber(ARGV[a + 1]) then
    return {'conflict', r, stored[r]}
  end
  if mode == 's' then saves = saves + 1 end
  for i = gk, ctr - 1 do
    if call('EXISTS', KEYS[i]) == 1 then return {'guard', r, i - gk + 1} end
  end
  if lk > rk then
    local id = ARGV[a + 2]
    releasing = releasing or {}
    for i = 0, lk - rk - 1 do releasing[KEYS[rk + i] .. '\0' .. ARGV[rv + i]] = id end
  end
end
local claiming  -- made by the first claim: "key\0value" -> the id claiming it
for r = 1, n_records do
  local _, a, _, _, _, cv, _, _, _, _, _, ck, rk = unpack(records[r])
  if rk > ck then
    local id = ARGV[a + 2]
    claiming = claiming or {}
    for i = 0, rk - ck - 1 do
      local key, value = KEYS[ck + i], ARGV[cv + i]
      local slot = key .. '\0' .. value
      local holder = call('HGET', key, value)
      if holder and holder ~= id and not (releasing and releasing[slot] == holder) then
        return {'unique', r, i + 1, holder}
      end
      if claiming[slot] and claiming[slot] ~= id then
        return {'unique', r, i + 1, claiming[slot]}
      end
      claiming[slot] = id
    end
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
for r = 1, n_records do
  local mode, a, h, d, s, cv, rv, l, e, k, za, ck, rk, lk, gk, ctr, stamped =
    unpack(records[r])
  local key, id = KEYS[k], ARGV[a + 2]
  for i = 0, lk - rk - 1 do
    if call('HGET', KEYS[rk + i], ARGV[rv + i]) == id then
      call('HDEL', KEYS[rk + i], ARGV[rv + i])
    end
  end
  for i = k + 1, za - 1 do call('ZREM', KEYS[i], id) end
  for i = lk, gk - 1 do
    local last = l + 1 + tonumber(ARGV[l + 1])
    call('DEL', KEYS[i])
    local add = ARGV[l] == 'h' and 'HSET' or 'RPUSH'
    for first = l + 2, last, 1000 do
      call(add, KEYS[i], unpack(ARGV, first, math.min(first + 999, last)))
    end
    l = last + 1
  end
  local n = #versions
  if mode == 'c' then
    versions[n + 1], versions[n + 2] = tonumber(ARGV[a + 1]), 0
  elseif mode == 'd' then
    call('DEL', key)
    versions[n + 1], versions[n + 2] = 0, 0
  else
    local version = next_version
    next_version = next_version + 1
    local seq, seq_text = 0, '0'
    if s > d then call('HDEL', key, unpack(ARGV, d, s - 1)) end
    if stamped == 0 then
      call('HSET', key, 'version', version, unpack(ARGV, h, d - 1))
    else
      -- A counter field takes its value here, after every check passed (a refused write
      -- consumes no number): the larger of the counter's value + 1 and the server time
      -- in microseconds, a whole number as Python's format_score writes it, so _owned
      -- stays byte-equal to its encoding (written with %d: Lua's own conversion keeps
      -- 14 digits, a clock has 16). With 3, the clock field takes the time it reads as.
      -- A clock field alone (2) takes its text, and the scores its score.
      local field, value, owned, field2, value2 = ARGV[e], nil, nil, nil, nil
      if stamped == 2 then
        seq, value, seq_text, owned = flue_now()
      else
        local now = call('TIME')
        local clock = tonumber(now[1]) * 1000000 + tonumber(now[2])
        seq = math.max(tonumber(call('GET', KEYS[ctr]) or '0') + 1, clock)
        seq_text = string.format('%d', seq)
        call('SET', KEYS[ctr], seq_text)
        value, owned = seq_text, seq_text
        if stamped == 3 then field2, value2 = ARGV[e + 1], select(2, flue_at(seq)) end
      end
      -- The fields, with the stamped ones and _owned's '@#seq' replaced (a new list:
      -- ARGV is not written to).
      local fields = {unpack(ARGV, h, d - 1)}
      for i = 1, #fields, 2 do
        if fields[i] == field then
          fields[i + 1] = value
        elseif fields[i] == field2 then
          fields[i + 1] = value2
        elseif fields[i] == '_owned' then
          fields[i + 1] = string.gsub(fields[i + 1], '@#seq', '@' .. owned)
        end
      end
      call('HSET', key, 'version', version, unpack(fields))
    end
    for i = 0, ck - za - 1 do
      local score = ARGV[s + i]
      call('ZADD', KEYS[za + i], score == '#seq' and seq_text or score, id)
    end
    for i = 0, rk - ck - 1 do call('HSET', KEYS[ck + i], ARGV[cv + i], id) end
    versions[n + 1], versions[n + 2] = version, seq
  end
end
return versions
