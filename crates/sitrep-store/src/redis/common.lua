-- Shared helpers, prepended to each sitrep script.

-- The event log's epoch, created on first use: ARGV-supplied candidate if the key is missing (a new or flushed Redis).
local function sitrep_epoch(key, candidate)
  local epoch = redis.call('GET', key)
  if not epoch then
    epoch = candidate
    redis.call('SET', key, epoch)
  end
  return epoch
end

-- Whether stream id a ('ms-seq', decimal digits) is after id b. Compared as digit strings: ids may exceed what a
-- Lua number holds exactly.
local function sitrep_id_after(a, b)
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

-- Whether a stream entry is one of sitrep's (it names its predecessor). Others are skipped by readers.
local function sitrep_own(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'prev' then
      return true
    end
  end
  return false
end

-- The id of the latest event: the head key, or (if it was lost) the last of sitrep's entries in the stream
-- (searched back through a bounded number of others), or '0-0'.
local function sitrep_head(head_key, events_key)
  local head = redis.call('GET', head_key)
  if head then
    return head
  end
  local before = '+'
  for _ = 1, 10 do
    local page = redis.call('XREVRANGE', events_key, before, '-', 'COUNT', 100)
    for _, entry in ipairs(page) do
      if sitrep_own(entry) then
        return entry[1]
      end
    end
    if #page < 100 then
      break
    end
    before = '(' .. page[#page][1]
  end
  return '0-0'
end
