-- The event log's steps shared by the scripts that append to it (persist.lua, act.lua): Rust prefixes this file to
-- each, so every append writes the same entry (what the read path, the `p` links and trimming rely on) from one
-- definition. Locals only: a Redis script may not define globals.

-- The log's epoch (created from `candidate` if the log has none: a new or flushed Redis) and its head's id.
local function open_log(log, candidate)
  local epoch = redis.call('HGET', log, 'epoch')
  if not epoch then
    epoch = candidate
    redis.call('HSET', log, 'epoch', epoch)
  end
  return epoch, redis.call('HGET', log, 'head') or '0-0'
end

-- Appends `event` after the event `prev`; returns its id. Fields: p the previous event's id, e the epoch, w the
-- writer's token (which the writer recognises its own events by when it reads them back), d the event.
local function append(events, maxlen, epoch, prev, token, event)
  return redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*', 'p', prev, 'e', epoch, 'w', token, 'd', event)
end

-- After appending: the new head, and events older than `maxage` ms ('' for no limit) trimmed.
local function close_log(log, events, head, maxage)
  redis.call('HSET', log, 'head', head)
  if maxage ~= '' then
    -- Age is measured on Redis's clock, the one stream ids come from, not on any replica's.
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local min_ms = math.max(0, now - tonumber(maxage))
    redis.call('XTRIM', events, 'MINID', '~', string.format('%.0f', min_ms) .. '-0')
  end
end


-- The record of arguments at ARGV[from] on, as a table whose fields are `names` (the script's declared list, which
-- redis/args.rs sends in the same order), and the index of the argument after it.
local function named(names, from)
  local record = {}
  for k, name in ipairs(names) do
    record[name] = ARGV[from + k - 1]
  end
  return record, from + #names
end

-- Where each of `names` sits within a record of them (0 for the first): for reading records in place, by name, on
-- the report path, where copying each into a table (`named`) cost measurably more (docs/PERFORMANCE.md).
local function offsets(names)
  local at = {}
  for k = 1, #names do
    at[names[k]] = k - 1
  end
  return at
end
