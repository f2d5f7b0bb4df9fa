-- ARGV: seq, user, now (ms), has payment ref ('1' or '0'), payment ref.
-- Reply: {'ok', order} | {'err', code}. Paying a paid order again answers with the order.
local seq, now = ARGV[1], tonumber(ARGV[3])
local cfg = config()
local order, reply =
  hold_to_settle(cfg, seq, ARGV[2], now, 'paid', { cancelled = 'order_cancelled', expired = 'hold_expired' })
if not order then
  return reply
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
