-- Every stored revision of a provider's periods in [from, to], in period order.
--
-- KEYS: 1 history hash ('<period in hours>:<revision>' -> '<event id>|<entry>'), 2 history index (zset of those
--       fields, scored by the period in hours)
-- ARGV: 1 from, 2 to (periods in hours)
-- Returns {field, entry, field, entry, ...}.
local fields = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[2])
if #fields == 0 then
  return {}
end
local entries = redis.call('HMGET', KEYS[1], unpack(fields))
local out = {}
for i = 1, #fields do
  if entries[i] then
    out[#out + 1] = fields[i]
    out[#out + 1] = entries[i]
  end
end
return out
