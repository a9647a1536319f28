-- Live state of providers, their open alerts, and rollup totals, as of the latest event, atomically.
--
-- KEYS: 1 providers set, 2 head, 3 epoch
-- ARGV: 1 epoch candidate, 2 key prefix (e.g. '{sitrep}:'), 3 scopes (JSON list), 4 metrics that roll up by
--       maximum (JSON list), 5.. provider codes (none: every provider)
-- Returns {epoch, last id, {{provider, meta pairs, state pairs, alerts}, ...}, {{scope, totals pairs, {metric,
-- max, ...}}, ...}}.
local epoch = sitrep_epoch(KEYS[3], ARGV[1])
local last = sitrep_head(KEYS[2], ARGV[2] .. 'events')
local providers
if #ARGV > 4 then
  providers = {}
  for i = 5, #ARGV do
    providers[#providers + 1] = ARGV[i]
  end
else
  providers = redis.call('SMEMBERS', KEYS[1])
end
local out = {}
for _, p in ipairs(providers) do
  local meta = redis.call('HGETALL', ARGV[2] .. 'meta:' .. p)
  if #meta > 0 then
    out[#out + 1] = {p, meta, redis.call('HGETALL', ARGV[2] .. 'state:' .. p),
      redis.call('HVALS', ARGV[2] .. 'alerts:' .. p)}
  end
end
local scopes = {}
local max_metrics = cjson.decode(ARGV[4])
for _, scope in ipairs(cjson.decode(ARGV[3])) do
  local maxes = {}
  for _, m in ipairs(max_metrics) do
    local v = sitrep_max(ARGV[2], scope, m)
    if v then
      maxes[#maxes + 1] = m
      maxes[#maxes + 1] = v
    end
  end
  scopes[#scopes + 1] = {scope, redis.call('HGETALL', ARGV[2] .. 'agg:' .. scope), maxes}
end
return {epoch, last, out, scopes}
