-- Every stored revision of a provider's periods in [from, to], in period then revision order.
--
-- KEYS: 1 history hash, 2 history index (zset)
-- ARGV: 1 from (ms), 2 to (ms)
-- Returns {field, record, field, record, ...} where field is 'period:revision' and record the JSON written by apply.
local fields = redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[2])
if #fields == 0 then
  return {}
end
local records = redis.call('HMGET', KEYS[1], unpack(fields))
local out = {}
for i = 1, #fields do
  out[#out + 1] = fields[i]
  out[#out + 1] = records[i] or ''
end
return out
