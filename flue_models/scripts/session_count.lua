#!lua flags=no-writes
-- Count the entries among the first ARGV[1] elements of a session's entry list (an entry
-- larger than a chunk spans a header and its chunks), reading a few elements at a time.
-- KEYS[1]: the entry list. Returns {"ok", count}.
local bad = flue_expect(KEYS[1], 'list')
if bad then return bad end
local upto, count = tonumber(ARGV[1]), 0
for first = 0, upto - 1, 16 do
  local last = math.min(first + 15, upto - 1)
  for _, element in ipairs(redis.call('LRANGE', KEYS[1], first, last)) do
    if string.sub(element, 1, 1) ~= 'C' then count = count + 1 end
  end
end
return {'ok', count}
