-- The revision of a period just before a given one, which a late report's event diffs against.
--
-- KEYS: 1 history hash, 2 history index
-- ARGV: 1 period (hours), 2 revision
-- Returns the stored entry ('<event id>|<entry>') or '' if the period has no earlier revision.
local best, best_r = nil, -1
local r = tonumber(ARGV[2])
for _, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], ARGV[1], ARGV[1])) do
  local mr = tonumber(string.match(member, ':(%d+)$'))
  if mr and mr < r and mr > best_r then
    best, best_r = member, mr
  end
end
if not best then
  return ''
end
return redis.call('HGET', KEYS[1], best) or ''
