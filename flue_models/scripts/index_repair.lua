#!lua
-- Remove one derived entry the row does not own: a stale or orphan index entry, or a
-- unique claim. Reads the row's _owned record inside the script, so an entry a racing
-- writer just added for its row is never removed.
-- KEYS[1]: the record hash, KEYS[2]: the sorted set (kind "z") or uniq hash (kind "u")
-- ARGV[1]: kind ("z" | "u"), ARGV[2]: the member (an id) or the claimed value,
-- ARGV[3]: the set's key relative to the prefix (as _owned lists it),
-- ARGV[4]: for a claim, the value as _owned writes it (unpadded base64url)
-- Returns 1 when removed, 0 when the row owns it (or it is gone).
local bad = flue_expect(KEYS[1], 'hash')
  or flue_expect(KEYS[2], ARGV[1] == 'u' and 'hash' or 'zset')
if bad then return bad end
local owned = redis.call('HGET', KEYS[1], '_owned')
if owned then
  local ok, decoded = pcall(cjson.decode, owned)
  if not ok then
    return redis.error_reply('FLUE_CORRUPT ' .. KEYS[1] .. ' _owned ' .. string.sub(owned, 1, 80))
  end
  local section = ARGV[1] == 'u' and decoded['u'] or decoded['z']
  local mine = section and section[ARGV[3]]
  if mine ~= nil and (ARGV[1] == 'z' or mine == ARGV[4]) then return 0 end
end
if ARGV[1] == 'u' then
  return redis.call('HDEL', KEYS[2], ARGV[2])
end
return redis.call('ZREM', KEYS[2], ARGV[2])
