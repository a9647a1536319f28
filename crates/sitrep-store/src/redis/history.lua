-- Every stored revision of a provider's periods in [from, to].
--
-- KEYS: 1 history hash ('<period in hours>:<revision>[:<site>]' -> '<event id>|<entry>')
-- ARGV: 1 from, 2 to (periods in hours)
-- Returns {field, entry, field, entry, ...}, in no particular order.
local from, to = tonumber(ARGV[1]), tonumber(ARGV[2])
local fields = {}
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local h = tonumber(string.match(f, '^(%d+):'))
  if h and h >= from and h <= to then
    fields[#fields + 1] = f
  end
end
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
