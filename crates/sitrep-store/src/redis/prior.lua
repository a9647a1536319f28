-- A provider's state before a report, for the aggregator to derive from, with the version apply.lua checks.
--
-- KEYS: 1 meta hash, 2 state hash, 3 alerts hash, 4 history hash, 5 history index
-- ARGV: 1 period (ms), 2 revision
-- Returns {meta pairs, state pairs, open alerts (JSON each), the JSON record of the previous revision of the same
-- period or ''}. The last is what a late report is diffed against.
local best, best_r = nil, -1
local r = tonumber(ARGV[2])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[1], ARGV[1])) do
  local mr = tonumber(string.match(member, ':(%d+)$'))
  if mr < r and mr > best_r then
    best, best_r = member, mr
  end
end
local prev = ''
if best then
  prev = redis.call('HGET', KEYS[4], best) or ''
end
return {redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2]), redis.call('HVALS', KEYS[3]), prev}
