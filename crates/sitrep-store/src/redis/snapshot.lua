-- Live state of providers as of the latest event, atomically.
--
-- KEYS: 1 providers set, 2 head, 3 epoch
-- ARGV: 1 epoch candidate, 2 key prefix (e.g. '{sitrep}:'), 3.. provider codes (none: every provider)
-- Returns {epoch, last id, {{provider, meta fields and values, state fields and values}, ...}}.
local epoch = sitrep_epoch(KEYS[3], ARGV[1])
local last = sitrep_head(KEYS[2], ARGV[2] .. 'events')
local providers
if #ARGV > 2 then
  providers = {}
  for i = 3, #ARGV do
    providers[#providers + 1] = ARGV[i]
  end
else
  providers = redis.call('SMEMBERS', KEYS[1])
end
local out = {}
for _, p in ipairs(providers) do
  local meta = redis.call('HGETALL', ARGV[2] .. 'meta:' .. p)
  if #meta > 0 then
    out[#out + 1] = {p, meta, redis.call('HGETALL', ARGV[2] .. 'state:' .. p)}
  end
end
return {epoch, last, out}
