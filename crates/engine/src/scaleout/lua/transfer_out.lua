-- ARGV: transfer id, destination bucket id, at most this many units, now (ms).
-- Lends free units to another bucket. Units a waiting user here is owed are not lent.
-- Reply: {'ok', units lent}.
local id, destination, most, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
if not config() or count('waiting') > 0 then
  return { 'ok', '0' }
end
local units = math.min(count('available'), most)
if units <= 0 then
  return { 'ok', '0' }
end
add('available', -units)
add('lent', units)
redis.call('HSET', KEYS[11], id, destination .. ':' .. units .. ':' .. now)
return { 'ok', tostring(units) }
