-- ARGV: auction id, config JSON (as stored), title, seller, start, reserve, buy_now, starts, ends,
-- soft, extend, max_ext (-1: none), ladder ("from:increment,..."), payment seconds, origin.
-- Writes the auction, creates its stream's sink group and puts the first row on the stream.
-- Reply: {'ok'} | {'err', 'exists'}.
if redis.call('EXISTS', KEYS[13]) == 1 then
  return { 'err', 'exists' }
end
redis.call('HSET', KEYS[13], 'cfg', ARGV[2], 'title', ARGV[3], 'seller', ARGV[4], 'start', ARGV[5], 'reserve', ARGV[6],
  'buy_now', ARGV[7], 'starts', ARGV[8], 'ends', ARGV[9], 'soft', ARGV[10], 'extend', ARGV[11], 'max_ext', ARGV[12],
  'ladder', ARGV[13], 'payment', ARGV[14], 'ext', 0, 'price', ARGV[5], 'nbids', 0, 'version', 1)
redis.call('XGROUP', 'CREATE', KEYS[10], 'sink', '0', 'MKSTREAM')
save_state(ARGV[1], load_auction())
return { 'ok' }
