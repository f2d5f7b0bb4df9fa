-- ARGV: transfer id, units, now (ms). Receives lent units once per transfer id; waiting users
-- here are served first. Reply: {'ok', units received (0 when already received)}.
local id, units, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cfg = config()
if not cfg or redis.call('SADD', KEYS[12], id) == 0 then
  return { 'ok', '0' }
end
add('available', units)
serve_waitlist(cfg, now)
return { 'ok', tostring(units) }
