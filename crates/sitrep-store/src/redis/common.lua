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
