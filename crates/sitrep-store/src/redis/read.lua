-- Events after a cursor, with the log's epoch and head, so the caller can decide whether the cursor can be served.
--
-- KEYS: 1 events stream, 2 epoch, 3 head
-- ARGV: 1 epoch candidate, 2 id to read after, 3 count (0: only epoch and head)
-- Returns {epoch, head id ('0-0' when empty), entries}.
local epoch = sitrep_epoch(KEYS[2], ARGV[1])
local head = redis.call('GET', KEYS[3]) or '0-0'
local entries = {}
-- A cursor ahead of the head gets no entries (the caller resets it); XRANGE would reject an id past the maximum.
if tonumber(ARGV[3]) > 0 and head ~= '0-0' and not sitrep_id_after(ARGV[2], head) then
  entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[2], '+', 'COUNT', ARGV[3])
end
return {epoch, head, entries}
