-- Marks a provider stale, once: however many aggregators ask at the same moment, the first one that finds it
-- quiet and not yet stale raises the alert and appends the event; the others find it stale and do nothing.
--
-- KEYS: 1 meta hash, 2 alerts hash, 3 events stream, 4 epoch, 5 head, 6 stale set
-- ARGV: 1 provider, 2 deadline (ms: a last live report received at or before it is too old), 3 alert key,
--       4 alert JSON, 5 derived JSON (carried in the event), 6 scopes (JSON list), 7 epoch candidate,
--       8 stream max length, 9 stream max age in ms ('' for none), 10 now (ms), 11 key prefix
-- Returns {'stale', epoch, id, rollup totals JSON, period, revision, observed} (the latest report's) or
-- {'no', epoch}.
local epoch = sitrep_epoch(KEYS[4], ARGV[7])
local meta = redis.call('HMGET', KEYS[1], 'received', 'stale', 'period', 'revision', 'observed')
if not meta[1] or meta[2] == '1' or tonumber(meta[1]) > tonumber(ARGV[2]) then
  return {'no', epoch}
end
redis.call('HSET', KEYS[1], 'stale', '1')
redis.call('HINCRBY', KEYS[1], 'ver', 1)
redis.call('SADD', KEYS[6], ARGV[1])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
local out = {}
for _, scope in ipairs(cjson.decode(ARGV[6])) do
  redis.call('HINCRBY', ARGV[11] .. 'agg:' .. scope, '|stale', 1)
  out[scope] = sitrep_totals(ARGV[11], scope, {}, {})
end
local totals = cjson.encode(out)
local id = sitrep_append(KEYS[3], KEYS[5], ARGV[8], ARGV[9], {'e', epoch, 'k', 'stale', 'p', ARGV[1], 's', '',
  'per', meta[3], 'rev', meta[4], 'obs', meta[5], 'rcv', ARGV[10], 'live', '0', 'nar', '', 'src', '', 'ch', '',
  'd', ARGV[5], 'agg', totals})
return {'stale', epoch, id, totals, meta[3], meta[4], meta[5]}
