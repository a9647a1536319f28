-- Events after a cursor, with what the caller needs to decide whether the cursor can be served.
--
-- KEYS: 1 events stream, 2 epoch
-- ARGV: 1 epoch candidate, 2 id to read after, 3 count (0: only the ends)
-- Returns {epoch, last generated id, oldest id a reader may resume after, entries}.
local epoch = sitrep_epoch(KEYS[2], ARGV[1])
local last, oldest = sitrep_stream_ends(KEYS[1])
local entries = {}
if tonumber(ARGV[3]) > 0 and last ~= '0-0' then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
end
return {epoch, last, oldest, entries}
