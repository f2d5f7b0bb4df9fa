-- ARGV: user, quantity, idempotency key ('' for none), now (ms).
-- Reply: {'created', order} | {'existing', order} | {'err', code}.
local user, quantity, key, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local cfg = config()
if not cfg then
  return { 'err', 'sale_not_found' }
end
local key_field = nil
if key ~= '' then
  -- Length-prefixed so no (user, key) pair can collide with another.
  key_field = #user .. ':' .. user .. key
  local seq = redis.call('HGET', KEYS[6], key_field)
  if seq then
    return { 'existing', redis.call('HGET', KEYS[3], seq) }
  end
else
  key = nil
end
if quantity > cfg.limit then
  return { 'err', 'invalid_quantity' }
end
if not in_window(cfg, now) then
  return { 'err', 'not_live' }
end
if units_of(user) + quantity > cfg.limit then
  return { 'err', 'limit_reached' }
end
if buyable() < quantity then
  return { 'err', 'sold_out' }
end
return { 'created', create_hold(cfg, user, quantity, key, key_field, now) }
