-- Persists one mutual aid action planned by sitrep-core (aid::plan), all or nothing. No business rule lives here:
-- the script only checks that the plan still applies (the book and each holding provider are at the versions it
-- was planned from) and writes what the plan says. log.lua is prefixed to it.
--
-- KEYS: 1 log hash (epoch, head), 2 events stream, 3 states hash (provider -> '<version>|<state>'), 4 aid hash
--       (R<n> / O<n> -> the record, 'version' -> the book's version, 'last_request' / 'last_offer' -> the highest
--       ids given, written as two more of the pairs; 'ref:<provider>|<reference>' -> the id of the provider's open
--       request with that reference, the index a create reads, set as more of the pairs)
-- ARGV: a HEADER; then `records` pairs (field, record), written to the aid hash as they are; then `ended_refs`
--       pairs (index field, request id) of requests the plan ends, each field removed only while it still names
--       that request (so rewriting an ended request never unindexes a later open one); then the book's
--       BOOK_EVENT; then a HOLDER per holding provider, in the order the lists below name their fields
--       (redis/args.rs sends them and documents each field; its test checks the two agree)
-- Returns one string: 'm' if the book or a provider has moved since the plan was made (nothing is written: the
-- caller plans again), else the epoch and a newline, then 'a<id> <id of the event before it>\n' per event in log
-- order (the book's first), the same outcome lines persist.lua answers.
local HEADER = {'epoch_candidate', 'max_len', 'max_age_ms', 'expected_version', 'version', 'records', 'ended_refs'}
local BOOK_EVENT = {'event', 'token'}
local HOLDER = {'provider', 'expected_version', 'state', 'event', 'token'}

local log, events, states, aid = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local header, first_record = named(HEADER, 1)
local maxlen, maxage = header.max_len, header.max_age_ms
local after_records = first_record + 2 * tonumber(header.records)
local after_ended = after_records + 2 * tonumber(header.ended_refs)
local book, next_arg = named(BOOK_EVENT, after_ended)
local holders = {}
while next_arg <= #ARGV do
  holders[#holders + 1], next_arg = named(HOLDER, next_arg)
end

-- Every check before any write: Redis does not undo a script's writes if it stops half way.
if (redis.call('HGET', aid, 'version') or '0') ~= header.expected_version then
  return 'm'
end
for _, holder in ipairs(holders) do
  local current = redis.call('HGET', states, holder.provider)
  local version = current and string.sub(current, 1, string.find(current, '|', 1, true) - 1) or '0'
  if version ~= holder.expected_version then
    return 'm'
  end
end

redis.call('HSET', aid, 'version', header.version, unpack(ARGV, first_record, after_records - 1))
for i = after_records, after_ended - 1, 2 do
  if redis.call('HGET', aid, ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', aid, ARGV[i])
  end
end
local epoch, head = open_log(log, header.epoch_candidate)
local out = {epoch, '\n'}
local id = append(events, maxlen, epoch, head, book.token, book.event)
out[#out + 1] = 'a' .. id .. ' ' .. head .. '\n'
head = id
for _, holder in ipairs(holders) do
  if holder.state ~= '' then
    redis.call('HSET', states, holder.provider, holder.state)
  end
  id = append(events, maxlen, epoch, head, holder.token, holder.event)
  out[#out + 1] = 'a' .. id .. ' ' .. head .. '\n'
  head = id
end
close_log(log, events, head, maxage)
return table.concat(out)
