-- Reads the part of mutual aid's book one action can touch, in one atomic step: the book's version and last ids,
-- the action's request and that request's offers. No rule lives here; the core decides what the records mean.
--
-- KEYS: 1 aid hash (R<n> / O<n> -> the record as JSON, 'version', 'last_request', 'last_offer',
--       'ref:<provider>|<reference>' -> the id of the provider's open request with that reference)
-- ARGV: 1 the request's field ('R<n>'), or '' when the action names an offer or is a create (then its request is
--       found from the offer, or from the index of open references),
--       2 the offer's field ('O<n>') or '', 3 a create's index field ('ref:<provider>|<reference>') or ''
-- Returns: {version or false, last_request or false, last_offer or false, the request or false, offer, offer, ...}
local aid = KEYS[1]
local request_field, offer_field, ref_field = ARGV[1], ARGV[2], ARGV[3]
if request_field == '' and ref_field ~= '' then
  request_field = redis.call('HGET', aid, ref_field) or ''
end
if request_field == '' and offer_field ~= '' then
  local offer = redis.call('HGET', aid, offer_field)
  if offer then
    request_field = 'R' .. string.format('%d', cjson.decode(offer).request)
  end
end
local out = redis.call('HMGET', aid, 'version', 'last_request', 'last_offer')
local request = false
if request_field ~= '' then
  request = redis.call('HGET', aid, request_field)
end
out[4] = request
if request then
  for _, id in ipairs(cjson.decode(request).offers) do
    local offer = redis.call('HGET', aid, 'O' .. string.format('%d', id))
    if offer then
      out[#out + 1] = offer
    end
  end
end
return out
