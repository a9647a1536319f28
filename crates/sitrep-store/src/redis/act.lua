-- Persists one mutual aid action planned by sitrep-core (aid::plan), all or nothing. No business rule lives here:
-- the script only checks that the plan still applies (the book and each holding provider are at the versions it
-- was planned from) and writes what the plan says. log.lua is prefixed to it.
--
-- KEYS: 1 log hash (epoch, head), 2 events stream, 3 states hash (provider -> '<version>|<state>'), 4 aid hash
--       (R<n> / O<n> -> the record, 'version' -> the book's version, 'last_request' / 'last_offer' -> the highest
--       ids given, written as two more of the pairs)
-- ARGV: 1 epoch candidate (used if the log has none), 2 stream max length, 3 stream max age in ms ('' for none),
--       4 the book's expected version, 5 its version after, 6 the number of records n, then n pairs (field, record),
--       then the book's event and its writer's token, then 5 per holding provider: provider, expected version, new
--       state ('' when it does not change), event, and its token
-- Returns one string: 'm' if the book or a provider has moved since the plan was made (nothing is written: the
-- caller plans again), else the epoch and a newline, then 'a<id> <id of the event before it>\n' per event in log
-- order (the book's first), the same outcome lines persist.lua answers.
local log, events, states, aid = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local maxlen, maxage = ARGV[2], ARGV[3]
local records = tonumber(ARGV[6])
local book_event = 7 + 2 * records

-- Every check before any write: Redis does not undo a script's writes if it stops half way.
if (redis.call('HGET', aid, 'version') or '0') ~= ARGV[4] then
  return 'm'
end
for i = book_event + 2, #ARGV, 5 do
  local current = redis.call('HGET', states, ARGV[i])
  local version = current and string.sub(current, 1, string.find(current, '|', 1, true) - 1) or '0'
  if version ~= ARGV[i + 1] then
    return 'm'
  end
end

redis.call('HSET', aid, 'version', ARGV[5], unpack(ARGV, 7, book_event - 1))
local epoch, head = open_log(log, ARGV[1])
local out = {epoch, '\n'}
local id = append(events, maxlen, epoch, head, ARGV[book_event + 1], ARGV[book_event])
out[#out + 1] = 'a' .. id .. ' ' .. head .. '\n'
head = id
for i = book_event + 2, #ARGV, 5 do
  if ARGV[i + 2] ~= '' then
    redis.call('HSET', states, ARGV[i], ARGV[i + 2])
  end
  id = append(events, maxlen, epoch, head, ARGV[i + 4], ARGV[i + 3])
  out[#out + 1] = 'a' .. id .. ' ' .. head .. '\n'
  head = id
end
close_log(log, events, head, maxage)
return table.concat(out)
