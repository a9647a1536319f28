-- Every stored revision of each provider's periods in [from, to]: one call reads many providers' history.
--
-- KEYS: the providers' history hashes ('<period in hours>:<revision>[:<site>]' -> '<event id>|<entry>')
-- ARGV: 1 from, 2 to (periods in hours)
-- Returns one list per key, in the order of KEYS: {field, entry, field, entry, ...}, in no particular order.
local from, to = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for k = 1, #KEYS do
  local fields = {}
  for _, f in ipairs(redis.call('HKEYS', KEYS[k])) do
    local h = tonumber(string.match(f, '^(%d+):'))
    if h and h >= from and h <= to then
      fields[#fields + 1] = f
    end
  end
  local found = {}
  if #fields > 0 then
    local entries = redis.call('HMGET', KEYS[k], unpack(fields))
    for i = 1, #fields do
      if entries[i] then
        found[#found + 1] = fields[i]
        found[#found + 1] = entries[i]
      end
    end
  end
  out[k] = found
end
return out
