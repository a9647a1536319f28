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

-- Adds a change of one metric to a scope's running totals: '<metric>|s' sum, '<metric>|n' count of providers with
-- a number, and for metrics that roll up by maximum a hash of value -> how many providers have it. `before` and
-- `after` are encoded values ('~...' when absent or none).
local function sitrep_total(prefix, scope, metric, before, after, is_max)
  local key = prefix .. 'agg:' .. scope
  local b, a = tonumber(before), tonumber(after)
  local dn = (a and 1 or 0) - (b and 1 or 0)
  local n = tonumber(redis.call('HGET', key, metric .. '|n') or '0')
  if dn ~= 0 then
    n = redis.call('HINCRBY', key, metric .. '|n', dn)
  end
  if n <= 0 then
    -- Nobody has a number: start the sum afresh rather than keep a rounding residue.
    redis.call('HSET', key, metric .. '|s', '0')
  else
    local ds = (a or 0) - (b or 0)
    if ds ~= 0 then
      redis.call('HINCRBYFLOAT', key, metric .. '|s', string.format('%.17g', ds))
    end
  end
  if is_max then
    local mk = prefix .. 'aggmax:' .. scope .. ':' .. metric
    if b and redis.call('HINCRBY', mk, before, -1) <= 0 then
      redis.call('HDEL', mk, before)
    end
    if a then
      redis.call('HINCRBY', mk, after, 1)
    end
  end
end

-- The largest value a scope's providers have for a max-rollup metric, as text, or nil.
local function sitrep_max(prefix, scope, metric)
  local best, text = nil, nil
  local counts = redis.call('HGETALL', prefix .. 'aggmax:' .. scope .. ':' .. metric)
  for i = 1, #counts, 2 do
    local v = tonumber(counts[i])
    if v and tonumber(counts[i + 1]) > 0 and (not best or v > best) then
      best, text = v, counts[i]
    end
  end
  return text
end

-- A scope's totals for `want` metrics: {r = reporting, s = stale, m = {metric = {sum, n[, max]}}}.
local function sitrep_totals(prefix, scope, want, is_max)
  local key = prefix .. 'agg:' .. scope
  local t = {r = tonumber(redis.call('HGET', key, '|reporting') or '0'),
    s = tonumber(redis.call('HGET', key, '|stale') or '0'), m = {}}
  for _, metric in ipairs(want) do
    local entry = {redis.call('HGET', key, metric .. '|s') or '0', redis.call('HGET', key, metric .. '|n') or '0'}
    if is_max[metric] then
      entry[3] = sitrep_max(prefix, scope, metric)
    end
    t.m[metric] = entry
  end
  return t
end

-- Appends an event with its predecessor link, moves the head, and trims the log by length and (optionally) age.
local function sitrep_append(events_key, head_key, maxlen, maxage, fields)
  local prev = sitrep_head(head_key, events_key)
  local args = {'XADD', events_key, 'MAXLEN', '~', maxlen, '*', 'prev', prev}
  for _, f in ipairs(fields) do
    args[#args + 1] = f
  end
  local id = redis.call(unpack(args))
  redis.call('SET', head_key, id)
  if maxage ~= '' then
    -- Age is measured on Redis's clock, the one stream ids come from, not on any replica's.
    local t = redis.call('TIME')
    local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
    local min_ms = math.max(0, now - tonumber(maxage))
    redis.call('XTRIM', events_key, 'MINID', '~', string.format('%.0f', min_ms) .. '-0')
  end
  return id
end
