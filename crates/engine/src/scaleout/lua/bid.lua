-- ARGV: auction id, user, maximum (cents), idempotency key ('' for none), now (ms), origin.
-- Reply: {'created', bid} | {'existing', bid} | {'err', code} (`bid_too_low:<minimum>`).
-- The replay comes first, so a retry after the close, or after the minimum moved past the
-- amount, still gets its original answer.
local auction_id, user, max, key, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local a = load_auction()
if not a then
  return { 'err', 'auction_not_found' }
end
local key_field = nil
if key ~= '' then
  key_field = #user .. ':' .. user .. key
  local seq = redis.call('HGET', KEYS[15], key_field)
  if seq then
    local bid = redis.call('HGET', KEYS[14], seq)
    if cjson.decode(bid).m == max then
      return { 'existing', bid }
    end
    return { 'err', 'key_reused' }
  end
else
  key = nil
end
if status(a, now) == 'ended' then
  return { 'err', 'not_live' }
end
if user == a.seller then
  return { 'err', 'seller_may_not_bid' }
end
local minimum = minimum_for(a, user)
if max < minimum then
  return { 'err', 'bid_too_low:' .. int(minimum) }
end
local leader_before = a.leader
local seq = a.nbids
local state = resolve(a, user, max, seq)
local bid = bid_json(auction_id, { seq = seq, u = user, m = max, t = now, k = key, s = state, p = a.price, l = a.leader })
redis.call('HSET', KEYS[14], seq, bid)
if key_field then
  redis.call('HSET', KEYS[15], key_field, seq)
end
redis.call('XADD', KEYS[10], '*', 't', 'b', 'j', bid)
a.nbids = seq + 1
a.version = a.version + 1
extend_if_closing(a, now)
save_state(auction_id, a)
announce_auction(auction_id, a, leader_before)
return { 'created', bid }
