-- A provider's state before a report, for the aggregator to derive from, with the version apply.lua checks.
--
-- KEYS: 1 meta hash, 2 state hash, 3 alerts hash, 4 history hash, 5 history index
-- ARGV: 1 period (ms), 2 revision
-- Returns {meta pairs, state pairs, open alerts (JSON each), the JSON record of the previous revision of the same
-- period or ''}. The last is what a late report is diffed against; it is looked up only for a late report, since a
-- feed that revises one hour thousands of times would otherwise make every report scan them all.
local live = redis.call('HMGET', KEYS[1], 'period', 'revision')
local p, r = tonumber(ARGV[1]), tonumber(ARGV[2])
local late = live[1] and (p < tonumber(live[1]) or (p == tonumber(live[1]) and r <= tonumber(live[2])))
local best, best_r = nil, -1
for _, member in ipairs(late and redis.call('ZRANGEBYSCORE', KEYS[5], ARGV[1], ARGV[1]) or {}) do
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
