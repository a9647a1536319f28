-- Store::apply in one atomic step: idempotency check, version check, live state, history, alerts, rollup totals,
-- and the event.
--
-- The aggregator read the provider's state with prior.lua, diffed and derived from it (pure functions of
-- sitrep-core), and sends the outcome here with the version it read. If anything changed the provider since, the
-- script answers 'conflict' and changes nothing; the aggregator reads again and retries. So the diff and the
-- derived alerts always describe exactly the state they are applied to.
--
-- KEYS: 1 state hash, 2 meta hash, 3 history hash, 4 history index (zset), 5 events stream, 6 epoch, 7 providers set,
--       8 head, 9 alerts hash, 10 last-seen zset, 11 stale set
-- ARGV: 1 provider, 2 site, 3 period (ms), 4 revision, 5 observed_at (ms), 6 received_at (ms), 7 narrative,
--       8 source, 9 stream max length, 10 stream max age in ms ('' for none), 11 retention (ms), 12 epoch candidate,
--       13 expected version ('' for none), 14 live ('1' or '0'), 15 changes ('metric before after' triples joined
--       by spaces, '~' for no previous value), 16 derived (JSON, carried in the event), 17 alerts (JSON: {clear =
--       [key, ...], raise = [[key, json], ...]}), 18 rollup (JSON: {scopes = [...], max = [metric, ...], want =
--       [metric, ...]}), 19 key prefix, 20.. metric code, encoded value, ... (in code order)
-- Encoded values are numbers in shortest round-trip form or '~reason' for absent; they contain no '|' or ' '.
-- Returns {'duplicate', epoch, original id}, {'conflict', epoch} or {'accepted', epoch, id, rollup totals JSON}.
local provider, site, period, revision = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local observed, received, narrative, source = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local epoch = sitrep_epoch(KEYS[6], ARGV[12])
local prefix = ARGV[19]

local field = period .. ':' .. revision
local seen = redis.call('HGET', KEYS[3], field)
if seen then
  return {'duplicate', epoch, cjson.decode(seen)['c']}
end
if (redis.call('HGET', KEYS[2], 'ver') or '') ~= ARGV[13] then
  return {'conflict', epoch}
end

local fresh = ARGV[14] == '1'
local changes = ARGV[15]
local n = (#ARGV - 19) / 2
local metrics, values = {}, {}
for i = 1, n do
  metrics[i] = ARGV[18 + 2 * i]
  values[i] = ARGV[19 + 2 * i]
end

-- Rollup totals of the provider's system, region and nation, before the event so it can carry them.
local totals = ''
if fresh then
  local roll = cjson.decode(ARGV[18])
  local is_max = {}
  for _, m in ipairs(roll.max) do
    is_max[m] = true
  end
  local first = redis.call('HEXISTS', KEYS[2], 'period') == 0
  local was_stale = redis.call('HGET', KEYS[2], 'stale') == '1'
  local out = {}
  for _, scope in ipairs(roll.scopes) do
    local key = prefix .. 'agg:' .. scope
    if first then
      redis.call('HINCRBY', key, '|reporting', 1)
    end
    if was_stale then
      redis.call('HINCRBY', key, '|stale', -1)
    end
    for metric, before, after in string.gmatch(changes, '(%S+) (%S+) (%S+)') do
      sitrep_total(prefix, scope, metric, before, after, is_max[metric])
    end
    out[scope] = sitrep_totals(prefix, scope, roll.want, is_max)
  end
  totals = cjson.encode(out)
end

local id = sitrep_append(KEYS[5], KEYS[8], ARGV[9], ARGV[10], {'e', epoch, 'k', 'report',
  'p', provider, 's', site, 'per', period, 'rev', revision, 'obs', observed, 'rcv', received,
  'live', fresh and '1' or '0', 'nar', narrative, 'src', source, 'ch', changes, 'd', ARGV[16], 'agg', totals})

if fresh then
  if n > 0 then
    local readings = {}
    for i = 1, n do
      readings[#readings + 1] = metrics[i]
      readings[#readings + 1] = values[i] .. '|' .. period .. '|' .. observed
    end
    redis.call('HSET', KEYS[1], unpack(readings))
  end
  redis.call('HSET', KEYS[2], 'period', period, 'revision', revision, 'observed', observed, 'received', received,
    'narrative', narrative, 'source', source, 'site', site, 'stale', '0')
  redis.call('SADD', KEYS[7], provider)
  redis.call('ZADD', KEYS[10], received, provider)
  redis.call('SREM', KEYS[11], provider)
  local alerts = cjson.decode(ARGV[17])
  for _, key in ipairs(alerts.clear) do
    redis.call('HDEL', KEYS[9], key)
  end
  for _, kv in ipairs(alerts.raise) do
    redis.call('HSET', KEYS[9], kv[1], kv[2])
  end
end
redis.call('HINCRBY', KEYS[2], 'ver', 1)

local record = {}
for i = 1, n do
  record[metrics[i]] = values[i]
end
redis.call('HSET', KEYS[3], field, cjson.encode({c = id, v = record, o = observed, r = received, n = narrative,
  s = source, t = site}))
redis.call('ZADD', KEYS[4], period, field)

-- History older than the retention window, counted back from the newest period, goes (a bounded batch per call).
if fresh then
  local cutoff = string.format('%.0f', tonumber(period) - tonumber(ARGV[11]))
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. cutoff, 'LIMIT', 0, 500)
  if #old > 0 then
    redis.call('HDEL', KEYS[3], unpack(old))
    redis.call('ZREM', KEYS[4], unpack(old))
  end
end

return {'accepted', epoch, id, totals}
