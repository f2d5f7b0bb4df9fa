-- ARGV: seq, user, now (ms). Reply: {'ok', order} | {'err', code}.
local seq, user, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local cfg = config()
local order = cfg and owned(seq, user)
if not order then
  return { 'err', 'order_not_found' }
end
if order.s == 'cancelled' then
  return { 'ok', redis.call('HGET', KEYS[3], seq) }
elseif order.s == 'paid' then
  return { 'err', 'order_paid' }
elseif order.s == 'expired' then
  return { 'err', 'hold_expired' }
end
if now >= order.e then
  end_hold(cfg, order, 'expired', now)
  return { 'err', 'hold_expired' }
end
end_hold(cfg, order, 'cancelled', now)
return { 'ok', redis.call('HGET', KEYS[3], seq) }
