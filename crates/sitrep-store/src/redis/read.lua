-- Events after a cursor, with the log's epoch and head, so the caller can decide whether the cursor can be served.
--
-- KEYS: 1 events stream, 2 epoch, 3 head
-- ARGV: 1 epoch candidate, 2 id to read after, 3 count (0: only epoch and head)
-- Returns {epoch, head id ('0-0' when empty), entries}. Entries sitrep did not write are skipped (a bounded number
-- of pages of them), so they can neither hide sitrep's events from a reader nor stall it.
local epoch = sitrep_epoch(KEYS[2], ARGV[1])
local head = sitrep_head(KEYS[3], KEYS[1])
local want = tonumber(ARGV[3])
local entries = {}
-- A cursor ahead of the head gets no entries (the caller resets it); XRANGE would reject an id past the maximum.
if want > 0 and head ~= '0-0' and not sitrep_id_after(ARGV[2], head) then
  local from = '(' .. ARGV[2]
  for _ = 1, 16 do
    local page = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', want)
    for _, entry in ipairs(page) do
      if sitrep_own(entry) and #entries < want then
        entries[#entries + 1] = entry
      end
    end
    if #entries >= want or #page < want then
      break
    end
    from = '(' .. page[#page][1]
  end
end
return {epoch, head, entries}
