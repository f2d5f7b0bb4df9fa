-- ARGV: now (ms), at most this many holds.
-- Reply: {'ok', '<holds expired>:<earliest deadline left, -1 for none>'}.
local now, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local cfg = config()
if not cfg then
  return { 'ok', '0:-1' }
end
local expired = 0
for _, seq in ipairs(redis.call('ZRANGEBYSCORE', KEYS[7], '-inf', now, 'LIMIT', 0, most)) do
  local order = load_order(seq)
  redis.call('ZREM', KEYS[7], seq)
  if order and order.s == 'held' then
    end_hold(cfg, order, 'expired', now)
    expired = expired + 1
  end
end
local next = redis.call('ZRANGE', KEYS[7], 0, 0, 'WITHSCORES')[2] or '-1'
return { 'ok', expired .. ':' .. next }
