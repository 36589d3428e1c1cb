#!lua
-- Remove one derived entry the row does not own: a stale or orphan index entry, or a
-- unique claim. Reads the row's _owned record inside the script, so an entry a racing
-- writer just added for its row is never removed.
-- KEYS[1]: the record hash, KEYS[2]: the sorted set (kind "z") or uniq hash (kind "u")
-- ARGV[1]: kind ("z" | "u"), ARGV[2]: the member (an id) or the claimed value,
-- ARGV[3]: the token _owned holds when the row owns it: the set's name (as
--   spec.owned_name writes it) or, for a claim, "!<name>=<value as unpadded base64url>"
-- Returns 1 when removed, 0 when the row owns it (or it is gone).
local bad = flue_expect(KEYS[1], 'hash')
  or flue_expect(KEYS[2], ARGV[1] == 'u' and 'hash' or 'zset')
if bad then return bad end
local owned = redis.call('HGET', KEYS[1], '_owned')
if owned then
  -- "!claim ... @score name ..." (spec.encode_owned): printable ASCII tokens one space
  -- apart, every entry after a score. Anything else is not ours to decide by.
  local corrupt = redis.error_reply('FLUE_CORRUPT ' .. KEYS[1] .. ' _owned ' .. string.sub(owned, 1, 80))
  if string.find(owned, '[^!-~ ]') or string.find(owned, '  ', 1, true)
    or string.find(owned, '^ ') or string.find(owned, ' $') then
    return corrupt
  end
  local scored = false
  for token in string.gmatch(owned, '[^ ]+') do
    local lead = string.sub(token, 1, 1)
    if lead == '@' then
      scored = true
    elseif lead ~= '!' and not scored then
      return corrupt
    elseif token == ARGV[3] then
      return 0
    end
  end
end
if ARGV[1] == 'u' then
  return redis.call('HDEL', KEYS[2], ARGV[2])
end
return redis.call('ZREM', KEYS[2], ARGV[2])
