-- Store::apply in one atomic step: idempotency check, diff, live state, history, event.
--
-- KEYS: 1 state hash, 2 meta hash, 3 history hash, 4 history index (zset), 5 events stream, 6 epoch, 7 providers set,
--       8 head (the id of the latest event)
-- ARGV: 1 provider, 2 site, 3 period (ms), 4 revision, 5 observed_at (ms), 6 received_at (ms), 7 narrative,
--       8 source, 9 stream max length, 10 stream max age in ms ('' for none), 11 retention (ms), 12 epoch candidate,
--       13.. metric code, encoded value, metric code, encoded value, ... (in code order)
-- Encoded values are numbers in shortest round-trip form or '~reason' for absent; they contain no '|' or ' '.
-- Returns {'duplicate', epoch, original id} or {'accepted', epoch, id, live (1/0), changes}, where changes is
-- 'metric before after' triples joined by spaces ('~' for no previous value).
-- Each event names its epoch and the id of the event before it ('prev'), so a reader can prove it missed nothing.
local provider, site, period, revision = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local observed, received, narrative, source = ARGV[5], ARGV[6], ARGV[7], ARGV[8]
local epoch = sitrep_epoch(KEYS[6], ARGV[12])

local field = period .. ':' .. revision
local seen = redis.call('HGET', KEYS[3], field)
if seen then
  return {'duplicate', epoch, cjson.decode(seen)['c']}
end

local n = (#ARGV - 12) / 2
local metrics, values = {}, {}
for i = 1, n do
  metrics[i] = ARGV[11 + 2 * i]
  values[i] = ARGV[12 + 2 * i]
end

local p, r = tonumber(period), tonumber(revision)
local live = redis.call('HMGET', KEYS[2], 'period', 'revision')
local fresh = (not live[1]) or p > tonumber(live[1]) or (p == tonumber(live[1]) and r > tonumber(live[2]))

-- What each metric was: the live reading, or for a late report the previous revision of its period.
local before = {}
if fresh then
  if n > 0 then
    local old = redis.call('HMGET', KEYS[1], unpack(metrics))
    for i = 1, n do
      before[i] = old[i] and string.match(old[i], '^[^|]*') or false
    end
  end
else
  local best, best_r = nil, -1
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[4], period, period)) do
    local mr = tonumber(string.match(member, ':(%d+)$'))
    if mr < r and mr > best_r then
      best, best_r = member, mr
    end
  end
  local prev = {}
  if best then
    prev = cjson.decode(redis.call('HGET', KEYS[3], best))['v']
  end
  for i = 1, n do
    before[i] = prev[metrics[i]] or false
  end
end

local changes = {}
for i = 1, n do
  if before[i] ~= values[i] then
    changes[#changes + 1] = metrics[i] .. ' ' .. (before[i] or '~') .. ' ' .. values[i]
  end
end
changes = table.concat(changes, ' ')

local prev = sitrep_head(KEYS[8], KEYS[5])
local id = redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[9], '*', 'e', epoch, 'prev', prev,
  'p', provider, 's', site, 'per', period, 'rev', revision, 'obs', observed, 'rcv', received,
  'live', fresh and '1' or '0', 'nar', narrative, 'src', source, 'ch', changes)
redis.call('SET', KEYS[8], id)
if ARGV[10] ~= '' then
  -- Age is measured on Redis's clock, the one stream ids come from, not on any replica's.
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local min_ms = math.max(0, now - tonumber(ARGV[10]))
  redis.call('XTRIM', KEYS[5], 'MINID', '~', string.format('%.0f', min_ms) .. '-0')
end

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
    'narrative', narrative, 'source', source, 'site', site)
  redis.call('SADD', KEYS[7], provider)
end

local record = {}
for i = 1, n do
  record[metrics[i]] = values[i]
end
redis.call('HSET', KEYS[3], field, cjson.encode({c = id, v = record, o = observed, r = received, n = narrative,
  s = source, t = site}))
redis.call('ZADD', KEYS[4], period, field)

-- History older than the retention window, counted back from the newest period, goes (a bounded batch per call).
if fresh then
  local cutoff = string.format('%.0f', p - tonumber(ARGV[11]))
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', '(' .. cutoff, 'LIMIT', 0, 500)
  if #old > 0 then
    redis.call('HDEL', KEYS[3], unpack(old))
    redis.call('ZREM', KEYS[4], unpack(old))
  end
end

return {'accepted', epoch, id, fresh and 1 or 0, changes}
