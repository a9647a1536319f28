-- Persists plans made by sitrep-core (one or more, in order: a group commit), each all or nothing. No business rule
-- lives here: the script only checks that each plan still applies (its provider is at the version it was planned
-- from, and its report is not in history yet) and writes what the plan says. log.lua is prefixed to it.
--
-- KEYS: 1 log hash (epoch, head), 2 events stream, 3 states hash (provider -> '<version>|<state>')
-- ARGV: a HEADER, then a PLAN per plan, in the order the lists below name their fields (redis/args.rs sends them
-- and documents each field; its test checks the two agree).
-- Returns one string (one reply to parse rather than four per plan): the epoch and a newline, then an outcome per
-- plan: 'a<id> <id of the event before it>\n' (accepted), 'd<length>\n<the stored history entry, '<id>|<entry>'>'
-- (the report's key is in history already: a duplicate or a conflict), or
-- 'c<length>\n<the provider's current state, '' if none>' (a conflict).
local HEADER = {'epoch_candidate', 'max_len', 'max_age_ms', 'prefix'}
local PLAN = {'provider', 'expected_version', 'history_field', 'trim_hours', 'state', 'event', 'entry', 'token'}

local log, events, states = KEYS[1], KEYS[2], KEYS[3]
local header, next_arg = named(HEADER, 1)
local maxlen, maxage, prefix = header.max_len, header.max_age_ms, header.prefix
local epoch, head = open_log(log, header.epoch_candidate)
local appended = false

-- The text before the first '|' of a stored value: a state's version, or a history entry's event id.
local function before_bar(value)
  return string.sub(value, 1, string.find(value, '|', 1, true) - 1)
end

local out = {epoch, '\n'}
-- Each plan's fields are read in place by name (`at`), not copied into a table per plan: this loop is the report
-- path, and the copy cost a tenth or more of the script's time (docs/PERFORMANCE.md).
local at = offsets(PLAN)
for i = next_arg, #ARGV, #PLAN do
  local provider, field = ARGV[i + at.provider], ARGV[i + at.history_field]
  local hist = prefix .. 'hist:' .. provider
  local seen = field ~= '' and redis.call('HGET', hist, field)
  local current = redis.call('HGET', states, provider)
  if seen then
    -- The report's key was seen: whether it said the same (a duplicate) or not (a conflict) is the core's call.
    out[#out + 1] = 'd' .. #seen .. '\n' .. seen
  elseif (current and before_bar(current) or '0') ~= ARGV[i + at.expected_version] then
    local c = current or ''
    out[#out + 1] = 'c' .. #c .. '\n' .. c
  else
    local prev = head
    local id = append(events, maxlen, epoch, prev, ARGV[i + at.token], ARGV[i + at.event])
    head, appended = id, true
    if ARGV[i + at.state] ~= '' then
      redis.call('HSET', states, provider, ARGV[i + at.state])
    end
    if field ~= '' then
      redis.call('HSET', hist, field, id .. '|' .. ARGV[i + at.entry])
      if ARGV[i + at.trim_hours] ~= '' then
        -- History older than the retention window goes when the provider moves to a new period (once an hour), a
        -- bounded batch at a time. Fields start with their period in hours; no index is kept (it cost more memory
        -- than the entries it indexed).
        local cutoff, old = tonumber(ARGV[i + at.trim_hours]), {}
        for _, f in ipairs(redis.call('HKEYS', hist)) do
          -- A field that does not start '<hours>:' is not sitrep's: left alone (a script error here would come
          -- after the writes above, which Redis does not undo).
          local hours = tonumber(string.match(f, '^(%d+):') or '')
          if hours and hours < cutoff then
            old[#old + 1] = f
            if #old == 500 then
              break
            end
          end
        end
        if #old > 0 then
          redis.call('HDEL', hist, unpack(old))
        end
      end
    end
    out[#out + 1] = 'a' .. id .. ' ' .. prev .. '\n'
  end
end

if appended then
  close_log(log, events, head, maxage)
end
return table.concat(out)
