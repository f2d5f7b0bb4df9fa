-- ARGV: user, quantity, now (ms). Reply: {'ok', place (1-based, among those waiting)} | {'err', code}.
local user, quantity, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cfg = config()
if not cfg then
  return { 'err', 'sale_not_found' }
end
if quantity > cfg.limit then
  return { 'err', 'invalid_quantity' }
end
if not in_window(cfg, now) then
  return { 'err', 'not_live' }
end
if redis.call('HEXISTS', KEYS[9], user) == 1 then
  return { 'err', 'already_waitlisted' }
end
if units_of(user) + quantity > cfg.limit then
  return { 'err', 'limit_reached' }
end
if buyable() >= quantity then
  return { 'err', 'stock_available' }
end
if count('available') + count('held') < quantity then
  -- Nothing held can come back to make up the quantity: waiting would be in vain.
  return { 'err', 'sold_out' }
end
local position = redis.call('HINCRBY', KEYS[2], 'wl_len', 1) - 1
save_entry({ pos = position, u = user, q = quantity, j = now, s = 'w', v = 1 })
redis.call('HSET', KEYS[9], user, position)
local place = redis.call('HINCRBY', KEYS[2], 'waiting', 1)
return { 'ok', tostring(place) }
