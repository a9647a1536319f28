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

-- The stream's ends: its last generated id, and the oldest id a reader may resume after without a gap. Entries
-- are only ever trimmed from the front, so once any were (entries-added > length) a reader must be at or past the
-- first retained entry; XDEL'd entries (max-deleted-entry-id) count too. Returns last, oldest ('0-0' if none).
local function sitrep_stream_ends(key)
  if redis.call('EXISTS', key) == 0 then
    return '0-0', '0-0'
  end
  local info = redis.call('XINFO', 'STREAM', key)
  local f = {}
  for i = 1, #info, 2 do
    f[info[i]] = info[i + 1]
  end
  local oldest = f['max-deleted-entry-id'] or '0-0'
  if tonumber(f['entries-added']) > tonumber(f['length']) and f['recorded-first-entry-id'] then
    oldest = f['recorded-first-entry-id']
  end
  return f['last-generated-id'], oldest
end
