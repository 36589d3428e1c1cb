#!lua
-- Rename a set of keys at once: every source that exists moves to its target, or nothing
-- moves when a target exists already or a source is not of the type it should be. Used
-- by migrations that move keys into other slots, on a standalone server (where a script
-- may touch any key).
-- KEYS: source 1, target 1, source 2, target 2, ...
-- ARGV: the type each source must be (when it exists), in order.
-- Returns {'moved', count} or {'taken', target key}.
for i = 1, #KEYS, 2 do
  local bad = flue_expect(KEYS[i], ARGV[(i + 1) / 2])
  if bad then return bad end
  if redis.call('EXISTS', KEYS[i + 1]) == 1 then return {'taken', KEYS[i + 1]} end
end
local count = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 1])
    count = count + 1
  end
end
return {'moved', count}
