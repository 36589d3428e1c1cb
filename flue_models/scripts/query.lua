#!lua flags=no-writes
-- Walk one sorted set in order from a keyset cursor and return the ids that pass every
-- filter. No temporary keys, no SCAN: O(log N + examined).
--
-- KEYS: n_drivers candidate sets to walk (the one with the fewest entries inside the
--       score bounds is walked), then the keys the filters read, in filter order.
-- ARGV: n_drivers, direction ("asc" | "desc"),
--       min, min_exclusive ("1" | "0"), max, max_exclusive   (scores; "-inf"/"inf" ok),
--       cursor_score ("" for none), cursor_id, limit, budget (most redis.call to make:
--       every ZSCORE, ZRANGE and ZCOUNT counts; the entry being checked is finished, so a
--       call always makes progress and does bounded work whatever the query),
--       n_filters, then per filter: type, n_keys, and for its type:
--         "member"    (n_keys sets; passes if the id is in any)          no more args
--         "owned"     (n_keys sets; as "member", read from the row)       head, row
--                     The row (head .. row .. base64url(id), in the id's slot under a
--                     tagged layout) records its index entries in its _owned field
--                     ("@score key key ...", keys relative to head .. row, or to the
--                     head when they start with "{"; "!key=value" tokens are claims):
--                     one HGET per candidate instead of one ZSCORE per set. A row
--                     without a readable _owned falls back to the ZSCOREs.
--         "notmember" (n_keys sets; passes if the id is in none)         no more args
--         "range"     (1 set)  lo, lo_exclusive, hi, hi_exclusive
--         "score"     (1 set)  n, score, ...  (passes if the id's score is one of them)
--         "notscore"  (1 set)  n, score, ...  (passes unless it is)
--       then rows: "" to return ids only, or the record key prefix (the id follows as
--       base64url, in the id's slot under a tagged layout) to return each id's hash too.
-- Returns {ids, last_score, last_id, exhausted (0|1), driver_number, calls made, scores,
-- rows} (scores: each returned id's score in the walked set, for merging the walks of
-- buckets; rows: per id its HGETALL, or the error text of a key that is no hash, read in
-- this call, so a page of records is one round trip and ids and rows agree).
-- Once ``limit`` ids are found the walk looks one match ahead (within the budget), so
-- a page that ends the results says ``exhausted`` instead of leading to an empty page;
-- last_score/last_id stay at the last returned id, where the next page starts.

-- Scores travel as text that Redis and Python both parse exactly.
local function num(text)
  if text == '+inf' or text == 'inf' then return math.huge end
  if text == '-inf' then return -math.huge end
  return tonumber(text)
end

local n_drivers = tonumber(ARGV[1])
local desc = ARGV[2] == 'desc'
local min, min_ex = num(ARGV[3]), ARGV[4] == '1'
local max, max_ex = num(ARGV[5]), ARGV[6] == '1'
local cursor_score = ARGV[7] ~= '' and num(ARGV[7]) or nil
local cursor_id = ARGV[8]
local limit, budget = tonumber(ARGV[9]), tonumber(ARGV[10])
local function lo_text() return (min_ex and '(' or '') .. ARGV[3] end
local function hi_text() return (max_ex and '(' or '') .. ARGV[5] end

local calls = n_drivers + 2  -- the ZCOUNTs below that pick the driver and find the start

-- Pick the candidate with the fewest entries inside the bounds.
local driver, driver_number, best = KEYS[1], 1, nil
for d = 1, n_drivers do
  local count = redis.call('ZCOUNT', KEYS[d], lo_text(), hi_text())
  if best == nil or count < best then driver, driver_number, best = KEYS[d], d, count end
end

-- Parse the filters.
local filters, a, k = {}, 12, n_drivers + 1
for _ = 1, tonumber(ARGV[11]) do
  local f = {kind = ARGV[a], keys = {}}
  local n_keys = tonumber(ARGV[a + 1]); a = a + 2
  for _ = 1, n_keys do table.insert(f.keys, KEYS[k]); k = k + 1 end
  if f.kind == 'owned' then
    f.set = {}
    for _, key in ipairs(f.keys) do f.set[key] = true end
    f.head, f.row = ARGV[a], ARGV[a + 1]; a = a + 2
  elseif f.kind == 'range' then
    f.lo, f.lo_ex = num(ARGV[a]), ARGV[a + 1] == '1'
    f.hi, f.hi_ex = num(ARGV[a + 2]), ARGV[a + 3] == '1'
    a = a + 4
  elseif f.kind == 'score' or f.kind == 'notscore' then
    f.scores = {}
    local n = tonumber(ARGV[a]); a = a + 1
    for _ = 1, n do f.scores[num(ARGV[a])] = true; a = a + 1 end
  end
  table.insert(filters, f)
end
local rows_prefix = ARGV[a]

local function in_range(s, lo, lo_ex, hi, hi_ex)
  if s < lo or (lo_ex and s == lo) then return false end
  if s > hi or (hi_ex and s == hi) then return false end
  return true
end

local function zscore(key, id)
  calls = calls + 1
  return redis.call('ZSCORE', key, id)
end

-- Unpadded base64url, as keys.encode_segment writes the ids in key names.
local B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
local function segment(id)
  local out = {}
  for i = 1, #id, 3 do
    local b1, b2, b3 = string.byte(id, i, i + 2)
    local n = b1 * 65536 + (b2 or 0) * 256 + (b3 or 0)
    local chars = b3 and 4 or (b2 and 3 or 2)
    for j = 1, chars do
      local v = math.floor(n / 2 ^ (18 - 6 * (j - 1))) % 64
      out[#out + 1] = string.sub(B64, v + 1, v + 1)
    end
  end
  return table.concat(out)
end

-- Whether the row's own record of its index entries names one of the filter's sets;
-- nil when the row has no readable record (missing, older, or corrupted).
local function owned_in(f, id)
  calls = calls + 1
  local raw = redis.call('HGET', f.head .. f.row .. segment(id), '_owned')
  if not raw then return nil end
  if string.find(raw, '  ', 1, true) or string.find(raw, '^ ') or string.find(raw, ' $') then
    return nil  -- not what encode_owned writes: an empty token
  end
  local scored, found = false, false
  for token in string.gmatch(raw, '[^ ]+') do
    local first = string.sub(token, 1, 1)
    if first == '@' then
      scored = true
    elseif first ~= '!' then
      if not scored then return nil end  -- not what encode_owned writes
      local base = first == '{' and f.head or f.head .. f.row
      if f.set[base .. token] then found = true end
    end
  end
  return found
end

local function in_any(keys, id)
  for _, key in ipairs(keys) do
    if zscore(key, id) then return true end
  end
  return false
end

local function passes(id)
  for _, f in ipairs(filters) do
    if f.kind == 'member' or f.kind == 'notmember' or f.kind == 'owned' then
      local found = nil
      if f.kind == 'owned' then found = owned_in(f, id) end
      if found == nil then found = in_any(f.keys, id) end
      if found ~= (f.kind ~= 'notmember') then return false end
    else
      local s = zscore(f.keys[1], id)
      if f.kind == 'range' then
        if not s or not in_range(tonumber(s), f.lo, f.lo_ex, f.hi, f.hi_ex) then return false end
      elseif f.kind == 'score' then
        if not s or not f.scores[tonumber(s)] then return false end
      elseif s and f.scores[tonumber(s)] then
        return false
      end
    end
  end
  return true
end

-- Byte-wise order of members (Lua's own string order follows the locale).
local function before(x, y)
  local n = math.min(#x, #y)
  for i = 1, n do
    local bx, by = string.byte(x, i), string.byte(y, i)
    if bx ~= by then return bx < by end
  end
  return #x < #y
end

-- Position of the first entry to examine, counted in walking order.
local start
if desc then  -- entries above the upper bound
  start = redis.call('ZCOUNT', driver, max_ex and ARGV[5] or '(' .. ARGV[5], '+inf')
else          -- entries below the lower bound
  start = redis.call('ZCOUNT', driver, '-inf', min_ex and ARGV[3] or '(' .. ARGV[3])
end
local skip_ties = false
if cursor_score then
  local here = redis.call('ZSCORE', driver, cursor_id)
  local position
  if here and num(here) == cursor_score then
    position = redis.call(desc and 'ZREVRANK' or 'ZRANK', driver, cursor_id) + 1
  else
    local text = ARGV[7]
    if desc then
      position = redis.call('ZCOUNT', driver, '(' .. text, '+inf')
    else
      position = redis.call('ZCOUNT', driver, '-inf', '(' .. text)
    end
    skip_ties = true
  end
  if position > start then start = position end
end

local ids, scores, exhausted = {}, {}, 0
local last_score, last_id = ARGV[7], cursor_id
local chunk = math.max(limit, 64)
while true do
  calls = calls + 1
  local entries = redis.call(desc and 'ZREVRANGE' or 'ZRANGE', driver, start, start + chunk - 1, 'WITHSCORES')
  if #entries == 0 then exhausted = 1; break end
  local stop = false
  for i = 1, #entries, 2 do
    local id, s_text = entries[i], entries[i + 1]
    local s = num(s_text)
    if desc then
      if s < min or (min_ex and s == min) then exhausted = 1; stop = true; break end
    else
      if s > max or (max_ex and s == max) then exhausted = 1; stop = true; break end
    end
    local skip = false
    if skip_ties and s == cursor_score then
      if desc then skip = not before(id, cursor_id) else skip = not before(cursor_id, id) end
    end
    if not skip then
      if #ids >= limit then  -- looking ahead: one more match means more pages
        if passes(id) then stop = true; break end
      else
        last_score, last_id = s_text, id
        if passes(id) then table.insert(ids, id); table.insert(scores, s_text) end
      end
      if calls >= budget then stop = true; break end
    end
  end
  if stop then break end
  if #entries < chunk * 2 then exhausted = 1; break end
  start = start + chunk
end
local rows = {}
if rows_prefix ~= '' then
  for i, id in ipairs(ids) do
    local row = redis.pcall('HGETALL', rows_prefix .. segment(id))
    rows[i] = row.err or row
  end
end
return {ids, last_score, last_id, exhausted, driver_number, calls, scores, rows}
