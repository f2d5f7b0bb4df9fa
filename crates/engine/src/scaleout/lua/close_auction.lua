-- ARGV: auction id, now (ms), origin. Ends the auction if its end has come and it has not
-- ended yet (exactly once, whichever replica's sweep comes first): the leader wins at the
-- current price if the reserve is met, and gets the lot's hold in the same step.
-- Reply: {'closed', won ('1'|'0')} (ended by this call) | {'ended', won} (ended before) |
-- {'open', current end} | {'err', 'auction_not_found'}.
local auction_id, now = ARGV[1], tonumber(ARGV[2])
local a = load_auction()
if not a then
  return { 'err', 'auction_not_found' }
end
if a.ended then
  return { 'ended', a.winner and '1' or '0' }
end
if now < a.ends then
  return { 'open', int(a.ends) }
end
local winner = nil
if a.leader and reserve_met(a) then
  winner = a.leader
end
finish(a, { at = a.ends, r = 'closed', w = winner, p = a.price })
save_state(auction_id, a)
announce_auction(auction_id, a, a.leader)
settle(a, now)
return { 'closed', winner and '1' or '0' }
