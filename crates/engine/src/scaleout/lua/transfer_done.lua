-- ARGV: transfer id. The destination has received the units: forget the loan.
-- Reply: {'ok', units}.
local lent = redis.call('HGET', KEYS[11], ARGV[1])
if not lent then
  return { 'ok', '0' }
end
local units = tonumber(string.match(lent, '^[^:]*:(%d+):'))
redis.call('HDEL', KEYS[11], ARGV[1])
add('lent', -units)
return { 'ok', tostring(units) }
