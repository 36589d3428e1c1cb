#!lua
-- Move one record into another bucket of its collection: its hash, every index entry
-- and unique claim it owns, and every key it owns; or nothing. Used by `cluster split`,
-- offline, on a standalone server only (the keys are in two buckets, so two slots).
--
-- KEYS: old row, new row, then n_z pairs (old sorted set, new sorted set),
--       n_u pairs (old claims hash, new claims hash), n_k pairs (old owned key, new).
-- ARGV: version the row was read at, the row's new _owned, the id,
--       n_z, then a score per pair; n_u, then the claimed value per pair; n_k.
-- Returns 'moved', 'changed' (the row's version is not the one read: read it again)
-- or 'taken' (a key of the new bucket exists: nothing was moved).

local refusal = flue_expect(KEYS[1], 'hash')
if refusal then return refusal end
if redis.call('HGET', KEYS[1], 'version') ~= ARGV[1] then return 'changed' end
local id = ARGV[3]
local n_z = tonumber(ARGV[4])
local n_u = tonumber(ARGV[5 + n_z])
local n_k = tonumber(ARGV[6 + n_z + n_u])
local k = 3
local z_keys, u_keys, o_keys = {}, {}, {}
for i = 1, n_z do z_keys[i] = {KEYS[k], KEYS[k + 1], ARGV[4 + i]}; k = k + 2 end
for i = 1, n_u do u_keys[i] = {KEYS[k], KEYS[k + 1], ARGV[5 + n_z + i]}; k = k + 2 end
for i = 1, n_k do o_keys[i] = {KEYS[k], KEYS[k + 1]}; k = k + 2 end

for _, entry in ipairs(z_keys) do
  refusal = flue_expect(entry[1], 'zset') or flue_expect(entry[2], 'zset')
  if refusal then return refusal end
end
for _, claim in ipairs(u_keys) do
  refusal = flue_expect(claim[1], 'hash') or flue_expect(claim[2], 'hash')
  if refusal then return refusal end
end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'taken' end
for _, pair in ipairs(o_keys) do
  if redis.call('EXISTS', pair[1]) == 1 and redis.call('EXISTS', pair[2]) == 1 then
    return 'taken'
  end
end

redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[2], '_owned', ARGV[2])
for _, entry in ipairs(z_keys) do
  redis.call('ZREM', entry[1], id)
  redis.call('ZADD', entry[2], entry[3], id)
end
for _, claim in ipairs(u_keys) do
  if redis.call('HGET', claim[1], claim[3]) == id then redis.call('HDEL', claim[1], claim[3]) end
  redis.call('HSET', claim[2], claim[3], id)
end
for _, pair in ipairs(o_keys) do
  if redis.call('EXISTS', pair[1]) == 1 then redis.call('RENAME', pair[1], pair[2]) end
end
return 'moved'
