-- ARGV: seq, user, now (ms). Reply: {'ok', order} | {'err', code}. Cancelling twice answers
-- with the order.
local seq, now = ARGV[1], tonumber(ARGV[3])
local cfg = config()
local order, reply =
  hold_to_settle(cfg, seq, ARGV[2], now, 'cancelled', { paid = 'order_paid', expired = 'hold_expired' })
if not order then
  return reply
end
end_hold(cfg, order, 'cancelled', now)
return { 'ok', redis.call('HGET', KEYS[3], seq) }
