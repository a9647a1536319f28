-- The revision of a period (from one site, or the provider as a whole) just before a given one, which a late
-- report's event diffs against.
--
-- KEYS: 1 history hash ('<period in hours>:<revision>[:<site>]' -> '<event id>|<entry>')
-- ARGV: 1 period (hours), 2 revision, 3 site ('' for the provider as a whole)
-- Returns the stored entry ('<event id>|<entry>') or '' if the period has no earlier revision.
local p, r, site = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local suffix = ''
if site ~= '' then
  suffix = ':' .. site
end
-- Most often the revision just before is there: one look. Otherwise (revisions skipped) the period's fields are
-- searched, which reads every field of the provider's history.
if r > 1 then
  local direct = redis.call('HGET', KEYS[1], p .. ':' .. string.format('%d', r - 1) .. suffix)
  if direct then
    return direct
  end
end
local best, best_r = nil, -1
for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
  local fp, fr, rest = string.match(f, '^(%d+):(%d+)(.*)$')
  fr = tonumber(fr)
  if fp == p and rest == suffix and fr and fr < r and fr > best_r then
    best, best_r = f, fr
  end
end
if not best then
  return ''
end
return redis.call('HGET', KEYS[1], best) or ''
