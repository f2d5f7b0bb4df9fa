-- ARGV: auction id, user, now (ms), origin. Ends the auction at once with the user as the
-- winner at the buy-now price, and holds the lot for them in the same step.
-- Reply: {'ok'} | {'err', code}.
local auction_id, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local a = load_auction()
if not a then
  return { 'err', 'auction_not_found' }
end
if status(a, now) ~= 'live' then
  return { 'err', 'not_live' }
end
if user == a.seller then
  return { 'err', 'seller_may_not_bid' }
end
if not buy_now_offered(a, now) then
  return { 'err', 'buy_now_unavailable' }
end
local leader_before = a.leader
finish(a, { at = now, r = 'bought_now', w = user, p = a.buy_now })
save_state(auction_id, a)
announce_auction(auction_id, a, leader_before)
settle(a, now)
return { 'ok' }
