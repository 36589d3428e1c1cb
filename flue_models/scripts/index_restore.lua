#!lua
-- Restore the index entries and unique claims a row calls for (verify --repair), only
-- if the row is as it was read: its _owned unchanged. A write that does not take the
-- version (a session append rescoring its entries) changes _owned, so its entries are
-- never put back to the scores of an older copy. All or nothing.
-- KEYS[1]: the record hash; KEYS[2...]: n_z sorted sets, then n_u "uniq" hashes
-- ARGV[1]: the row's _owned as read, ARGV[2]: its _owned for the entries below,
-- ARGV[3]: the id, ARGV[4]: n_z, then n_z scores, then n_u, then n_u claimed values
-- Returns {'ok'}, {'changed'} (read it again), or {'unique', claim_number, holder_id}
-- (another record holds the value; nothing written).
local bad = flue_expect(KEYS[1], 'hash')
if bad then return bad end
if redis.call('HGET', KEYS[1], '_owned') ~= ARGV[1] then return {'changed'} end
local n_z = tonumber(ARGV[4])
local n_u = tonumber(ARGV[5 + n_z])
for i = 2, 1 + n_z do
  bad = flue_expect(KEYS[i], 'zset')
  if bad then return bad end
end
for c = 1, n_u do
  local key = KEYS[1 + n_z + c]
  bad = flue_expect(key, 'hash')
  if bad then return bad end
  local holder = redis.call('HGET', key, ARGV[5 + n_z + c])
  if holder and holder ~= ARGV[3] then return {'unique', c, holder} end
end
for i = 1, n_z do redis.call('ZADD', KEYS[1 + i], ARGV[4 + i], ARGV[3]) end
for c = 1, n_u do redis.call('HSET', KEYS[1 + n_z + c], ARGV[5 + n_z + c], ARGV[3]) end
redis.call('HSET', KEYS[1], '_owned', ARGV[2])
return {'ok'}
