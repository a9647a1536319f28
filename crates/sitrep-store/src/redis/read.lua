-- Events after a cursor, with the log's epoch and head, so the caller can decide whether the cursor can be served.
--
-- KEYS: 1 log hash (epoch, head), 2 events stream
-- ARGV: 1 epoch candidate, 2 id to read after, 3 count (0: only epoch and head)
-- Returns {epoch, head id ('0-0' when empty), entries}. Entries sitrep did not write (they lack its fields) are
-- skipped, a bounded number of pages of them, so they can neither hide sitrep's events from a reader nor stall it.
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local head = redis.call('HGET', KEYS[1], 'head') or '0-0'

-- Whether stream id a ('ms-seq', decimal digits) is after id b. Compared as digit strings: ids may exceed what a
-- Lua number holds exactly.
local function after(a, b)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  if not ams or not bms then
    return false
  end
  local function gt(x, y)
    x, y = string.gsub(x, '^0+(%d)', '%1'), string.gsub(y, '^0+(%d)', '%1')
    if #x ~= #y then
      return #x > #y
    end
    return x > y
  end
  if ams ~= bms then
    return gt(ams, bms)
  end
  return gt(aseq, bseq)
end

-- sitrep's entries have exactly the fields p (the previous event's id), e (the epoch), w (the writer's token) and d
-- (the event).
local function own(entry)
  local f = entry[2]
  return #f == 8 and f[1] == 'p' and f[3] == 'e' and f[5] == 'w' and f[7] == 'd'
end

local want = tonumber(ARGV[3])
local entries = {}
-- A cursor ahead of the head gets no entries (the caller resets it); XRANGE would reject an id past the maximum.
if want > 0 and head ~= '0-0' and not after(ARGV[2], head) then
  local from = '(' .. ARGV[2]
  for _ = 1, 16 do
    local page = redis.call('XRANGE', KEYS[2], from, '+', 'COUNT', want)
    for _, entry in ipairs(page) do
      if own(entry) and #entries < want then
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
