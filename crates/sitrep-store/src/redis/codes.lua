-- The deployment's dictionary of metric codes: each code a small number, given once and kept for good, so stored
-- states, events and history name metrics in a byte or two. Codes not yet known get the next numbers, atomically,
-- so every replica agrees on them.
--
-- KEYS: 1 codes hash (code -> number)
-- ARGV: codes that must have a number
-- Returns the whole dictionary as {code, number, code, number, ...}.
for _, code in ipairs(ARGV) do
  if not redis.call('HGET', KEYS[1], code) then
    redis.call('HSET', KEYS[1], code, redis.call('HLEN', KEYS[1]) + 1)
  end
end
return redis.call('HGETALL', KEYS[1])
