#!lua
-- Append events to a stream with ids 0-<seq>, all or nothing; optionally idempotent.
-- Each entry holds its payload ("d") and the server time of the append in milliseconds
-- ("t": one TIME per call, so a batch shares it).
-- KEYS[1]: metadata hash, KEYS[2]: the Redis Stream of events, KEYS[3]: idempotency hash
-- ARGV[1]: idempotency key ("" for none), ARGV[2]: digest of the payloads,
-- ARGV[3...]: the payloads (JSON)
-- Returns {"ok", seq, ...}, {"missing"}, {"closed"}, or {"conflict", seq} when the
-- idempotency key was used with other payloads ({"ok", seq, ...} on an exact retry).
local bad = flue_expect(KEYS[1], 'hash') or flue_expect(KEYS[2], 'stream')
  or flue_expect(KEYS[3], 'hash')
if bad then return bad end
if redis.call('EXISTS', KEYS[1]) == 0 then return {'missing'} end
if ARGV[1] ~= '' then
  local prior = redis.call('HGET', KEYS[3], ARGV[1])
  if prior then
    local seqs, digest = string.match(prior, '^([^|]*)|(.*)$')
    local reply = {digest == ARGV[2] and 'ok' or 'conflict'}
    for seq in string.gmatch(seqs, '[^,]+') do table.insert(reply, tonumber(seq)) end
    return reply
  end
end
if redis.call('HGET', KEYS[1], 'closed') == '1' then return {'closed'} end
local seq_text = redis.call('HGET', KEYS[1], 'seq')
bad = flue_integer(KEYS[1], 'seq', seq_text)
  or flue_integer(KEYS[1], 'max_len', redis.call('HGET', KEYS[1], 'max_len'))
if bad then return bad end
-- The next id must be above the stream's last one (metadata deleted and created again
-- would restart seq below the events still stored).
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
if last then
  local last_seq = tonumber(string.match(last[1], '^0%-(%d+)$') or '-1')
  if last_seq == -1 or last_seq >= tonumber(seq_text or '0') + 1 then
    return redis.error_reply('FLUE_CORRUPT ' .. KEYS[1] .. ' seq ' .. tostring(seq_text)
      .. ' (behind the last event id ' .. last[1] .. ')')
  end
end
local max_len = redis.call('HGET', KEYS[1], 'max_len')
local now = redis.call('TIME')
local ms = string.format('%d', tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000))
local reply, seqs = {'ok'}, {}
for i = 3, #ARGV do
  local seq = redis.call('HINCRBY', KEYS[1], 'seq', 1)
  if max_len then
    redis.call('XADD', KEYS[2], 'MAXLEN', max_len, '0-' .. seq, 'd', ARGV[i], 't', ms)
  else
    redis.call('XADD', KEYS[2], '0-' .. seq, 'd', ARGV[i], 't', ms)
  end
  table.insert(reply, seq)
  table.insert(seqs, seq)
end
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[1], table.concat(seqs, ',') .. '|' .. ARGV[2])
end
return reply
