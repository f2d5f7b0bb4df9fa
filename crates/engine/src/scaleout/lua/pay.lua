-- ARGV: seq, user, now (ms), has payment ref ('1' or '0'), payment ref.
-- Reply: {'ok', order} | {'err', code}. A hold past its deadline expires here, in the same
-- step, so pay and expiry never both win.
local seq, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cfg = config()
local order = cfg and owned(seq, user)
if not order then
  return { 'err', 'order_not_found' }
end
if order.s == 'paid' then
  return { 'ok', redis.call('HGET', KEYS[3], seq) }
elseif order.s == 'cancelled' then
  return { 'err', 'order_cancelled' }
elseif order.s == 'expired' then
  return { 'err', 'hold_expired' }
end
if now >= order.e then
  end_hold(cfg, order, 'expired', now)
  return { 'err', 'hold_expired' }
end
order.s = 'paid'
order.up = now
order.v = order.v + 1
if ARGV[4] == '1' then
  order.p = ARGV[5]
end
add('held', -order.q)
add('sold', order.q)
redis.call('ZREM', KEYS[7], order.seq)
local json = save_order(order)
serve_waitlist(cfg, now)
return { 'ok', json }
