-- ARGV: sale JSON {id, name, stock, price, limit, hold_ms, starts, ends (-1: none), created,
-- buckets, room (settings JSON or null), pow}, this bucket's index, this bucket's share of the
-- stock.
-- Writes the config and counters, announces the sale on its stream (bucket 0 only) and creates
-- the sink's consumer group, all at once. Reply: {'ok'} | {'err', 'exists'}.
if redis.call('EXISTS', KEYS[1]) == 1 then
  return { 'err', 'exists' }
end
local sale = cjson.decode(ARGV[1])
local bucket, share = tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'stock', sale.stock, 'limit', sale.limit, 'hold_ms', sale.hold_ms,
  'starts', sale.starts, 'ends', sale.ends, 'name', sale.name, 'price', sale.price, 'created', sale.created,
  'buckets', sale.buckets, 'bucket', bucket, 'pow', sale.pow and 1 or 0)
if type(sale.room) == 'string' then
  redis.call('HSET', KEYS[1], 'room', sale.room)
end
redis.call('HSET', KEYS[2], 'available', share, 'held', 0, 'sold', 0, 'seq', 0, 'waiting', 0,
  'wl_len', 0, 'wl_head', 0, 'cancelled', 0, 'expired', 0, 'lent', 0)
if bucket == 0 then
  redis.call('XADD', KEYS[10], '*', 't', 's', 'j', ARGV[1])
end
redis.call('XGROUP', 'CREATE', KEYS[10], 'sink', '0', 'MKSTREAM')
return { 'ok' }
