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
