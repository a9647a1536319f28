-- Persists plans made by sitrep-core (one or more, in order: a group commit), each all or nothing. No business rule
-- lives here: the script only checks that each plan still applies (its provider is at the version it was planned
-- from, and its report is not in history yet) and writes what the plan says. log.lua is prefixed to it.
--
-- KEYS: 1 log hash (epoch, head), 2 events stream, 3 states hash (provider -> '<version>|<state>')
-- ARGV: 1 epoch candidate (used if the log has none: a new or flushed Redis), 2 stream max length, 3 stream max age
--       in ms ('' for none), 4 key prefix, then 8 per plan: provider, expected version, history field ('' for a
--       clock transition), trim history of periods before this one (in hours; '' for no trimming), new state ('' when live state does not change), event, history entry, writer's token (which
--       the writer recognises its own events by when it reads them back)
-- Returns one string (one reply to parse rather than four per plan): the epoch and a newline, then an outcome per
-- plan: 'a<id> <id of the event before it>\n' (accepted), 'd<length>\n<the stored history entry, '<id>|<entry>'>'
-- (the report's key is in history already: a duplicate or a conflict), or
-- 'c<length>\n<the provider's current state, '' if none>' (a conflict).
local log, events, states = KEYS[1], KEYS[2], KEYS[3]
local maxlen, maxage, prefix = ARGV[2], ARGV[3], ARGV[4]
local epoch, head = open_log(log, ARGV[1])
local appended = false

-- The text before the first '|' of a stored value: a state's version, or a history entry's event id.
local function before_bar(value)
  return string.sub(value, 1, string.find(value, '|', 1, true) - 1)
end

local out = {epoch, '\n'}
for i = 5, #ARGV, 8 do
  local provider, expected, field, trim = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local state, event, entry, token = ARGV[i + 4], ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  local hist = prefix .. 'hist:' .. provider
  local seen = field ~= '' and redis.call('HGET', hist, field)
  local current = redis.call('HGET', states, provider)
  if seen then
    -- The report's key was seen: whether it said the same (a duplicate) or not (a conflict) is the core's call.
    out[#out + 1] = 'd' .. #seen .. '\n' .. seen
  elseif (current and before_bar(current) or '0') ~= expected then
    local c = current or ''
    out[#out + 1] = 'c' .. #c .. '\n' .. c
  else
    local prev = head
    local id = append(events, maxlen, epoch, prev, token, event)
    head, appended = id, true
    if state ~= '' then
      redis.call('HSET', states, provider, state)
    end
    if field ~= '' then
      redis.call('HSET', hist, field, id .. '|' .. entry)
      if trim ~= '' then
        -- History older than the retention window goes when the provider moves to a new period (once an hour), a
        -- bounded batch at a time. Fields start with their period in hours; no index is kept (it cost more memory
        -- than the entries it indexed).
        local cutoff, old = tonumber(trim), {}
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
