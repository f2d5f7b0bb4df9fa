-- The sale state machine on Redis: helpers shared by every sale script. Each script is this
-- library followed by its own body, run atomically by Redis: one decision, one step.
--
-- KEYS, the same for every sale script (all share the sale's hash tag, so one cluster slot):
--   1 cfg     hash: stock, limit, hold_ms, starts, ends (-1: none), name, price, created,
--             buckets, bucket (this bucket's index)
--   2 ctr     hash: available, held, sold, seq (orders made here), waiting, wl_len, wl_head,
--             cancelled, expired (units), lent (units sent to another bucket, not yet
--             confirmed received)
--   3 orders  hash: seq -> order JSON
--   4 units   hash: user -> held + paid units
--   5 useq    hash: user -> the user's order seqs, comma separated, oldest first
--   6 keys    hash: idempotency field -> seq
--   7 due     zset: seq of each hold, scored by its deadline
--   8 wl      hash: waitlist position -> entry JSON
--   9 wlu     hash: user -> position of their waiting entry
--  10 events  stream: every changed order and waitlist entry, read by the order sink
--  11 outbox  hash: transfer id -> "destination bucket:units:time" of units lent
--  12 inbox   set: transfer ids received
--
-- A sale's stock may be split into buckets (hot SKUs on a cluster), each bucket a complete
-- sale state of its own under its own hash tag; order seqs are interleaved (seq = local seq *
-- buckets + bucket), so an order id names its bucket. Units move between buckets by transfer
-- (lent by one bucket, then received by another, exactly once by transfer id).
--
-- Orders: {seq, u, q, s (held|paid|cancelled|expired), c, e, up, v (version), k?, p?}.
-- Waitlist entries: {pos, u, q, j, s (w|g|d), g? (granted seq), v}.
-- Replies are arrays of strings: {'ok', ...} or {'err', code}, padded to two elements by
-- `announce` when the step changed anything, which then appends the step's change message.
--
-- Change feed: every step that changes something publishes one message on
-- `<namespace>:changes` naming what changed (see `scaleout/feed.rs`): length-prefixed tokens
-- (`<bytes>:<text>`), first the origin (the calling replica, the last ARGV of every script) and
-- the sale id, then `s` (the sale), `o <seq> <user>` (an order), `a <auction id>`, `x <user>`
-- (outbid), `w <user>` (won). One PUBLISH of a short string per step, in decision order.

local feed = {}
local sale_touched = false

local function note(...)
  for i = 1, select('#', ...) do
    local token = select(i, ...)
    feed[#feed + 1] = #token .. ':' .. token
  end
end

local function touch()
  if not sale_touched then
    sale_touched = true
    note('s')
  end
end

-- Publishes what the step changed (nothing when it changed nothing) and hands the message to
-- the caller too, as the reply's third element, so its own replica's followers hear of the
-- change before the reply.
local function announce(reply)
  if #feed == 0 then
    return reply
  end
  local namespace, bucket = string.match(KEYS[1], '^(.*):{([^{}]*)}:[^:]*$')
  local sale_id = string.gsub(bucket, '%.%d+$', '')
  local origin = ARGV[#ARGV]
  local message = #origin .. ':' .. origin .. #sale_id .. ':' .. sale_id .. table.concat(feed)
  redis.call('PUBLISH', namespace .. ':changes', message)
  while #reply < 2 do
    reply[#reply + 1] = ''
  end
  reply[3] = message
  return reply
end

local function count(field)
  return tonumber(redis.call('HGET', KEYS[2], field)) or 0
end

local function add(field, delta)
  touch()
  redis.call('HINCRBY', KEYS[2], field, delta)
end

local function config()
  local c = redis.call('HMGET', KEYS[1], 'stock', 'limit', 'hold_ms', 'starts', 'ends', 'buckets', 'bucket')
  if not c[1] then
    return nil
  end
  return {
    stock = tonumber(c[1]),
    limit = tonumber(c[2]),
    hold_ms = tonumber(c[3]),
    starts = tonumber(c[4]),
    ends = tonumber(c[5]),
    buckets = tonumber(c[6]) or 1,
    bucket = tonumber(c[7]) or 0,
  }
end

local function in_window(cfg, now)
  return now >= cfg.starts and (cfg.ends < 0 or now < cfg.ends)
end

local function units_of(user)
  return tonumber(redis.call('HGET', KEYS[4], user)) or 0
end

-- Units a new buyer can take: none while anyone waits (released units are the waitlist's).
local function buyable()
  local c = redis.call('HMGET', KEYS[2], 'waiting', 'available')
  if (tonumber(c[1]) or 0) > 0 then
    return 0
  end
  return tonumber(c[2]) or 0
end

local function save_order(order)
  touch()
  note('o', tostring(order.seq), order.u)
  local json = cjson.encode(order)
  redis.call('HSET', KEYS[3], order.seq, json)
  redis.call('XADD', KEYS[10], '*', 't', 'o', 'j', json)
  return json
end

local function save_entry(entry)
  touch()
  local json = cjson.encode(entry)
  redis.call('HSET', KEYS[8], entry.pos, json)
  redis.call('XADD', KEYS[10], '*', 't', 'w', 'j', json)
end

local function load_order(seq)
  local json = redis.call('HGET', KEYS[3], seq)
  if not json then
    return nil
  end
  return cjson.decode(json)
end

-- The hot path of a purchase: counters read once and written once, and a first order of a user
-- (the common case) recorded with one command.
local function create_hold(cfg, user, quantity, key, key_field, now)
  local c = redis.call('HMGET', KEYS[2], 'seq', 'available', 'held')
  local made = tonumber(c[1]) or 0
  local seq = made * cfg.buckets + cfg.bucket
  local order = { seq = seq, u = user, q = quantity, s = 'held', c = now, e = now + cfg.hold_ms, up = now, v = 1, k = key }
  redis.call('HSET', KEYS[2], 'seq', made + 1, 'available', (tonumber(c[2]) or 0) - quantity,
    'held', (tonumber(c[3]) or 0) + quantity)
  redis.call('HINCRBY', KEYS[4], user, quantity)
  if redis.call('HSETNX', KEYS[5], user, seq) == 0 then
    redis.call('HSET', KEYS[5], user, redis.call('HGET', KEYS[5], user) .. ',' .. seq)
  end
  if key_field then
    redis.call('HSET', KEYS[6], key_field, seq)
  end
  redis.call('ZADD', KEYS[7], order.e, seq)
  return save_order(order)
end

-- Grants holds to waiting users in order while units suffice; drops entries that can never be
-- served (the user would pass the limit, or fewer units than wanted are free or held).
local function serve_waitlist(cfg, now)
  local head, len = count('wl_head'), count('wl_len')
  while head < len do
    local entry = cjson.decode(redis.call('HGET', KEYS[8], head))
    if entry.s == 'w' then
      local available, held = count('available'), count('held')
      local over_limit = units_of(entry.u) + entry.q > cfg.limit
      if not over_limit and available + held >= entry.q and available < entry.q then
        break
      end
      redis.call('HDEL', KEYS[9], entry.u)
      add('waiting', -1)
      if over_limit or available + held < entry.q then
        entry.s = 'd'
      else
        local granted = cjson.decode(create_hold(cfg, entry.u, entry.q, nil, nil, now))
        entry.s = 'g'
        entry.g = granted.seq
      end
      entry.v = entry.v + 1
      save_entry(entry)
    end
    head = head + 1
  end
  redis.call('HSET', KEYS[2], 'wl_head', head)
end

local function end_hold(cfg, order, status, now)
  order.s = status
  order.up = now
  order.v = order.v + 1
  add('held', -order.q)
  add(status, order.q)
  redis.call('HINCRBY', KEYS[4], order.u, -order.q)
  redis.call('ZREM', KEYS[7], order.seq)
  save_order(order)
  add('available', order.q)
  serve_waitlist(cfg, now)
end

-- The caller's order, or nil when it does not exist or belongs to someone else.
local function owned(seq, user)
  local order = load_order(seq)
  if order and order.u == user then
    return order
  end
  return nil
end

-- The caller's hold, for a step that settles it (pay, cancel). Returns nil and the reply when
-- the step ends here: no such order, already settled this way (`done`: answered with the
-- order, so repeating the step is harmless), settled otherwise (`refusals[status]`), or past
-- its deadline (it expires now, in this same step, so settling and expiry never both win).
local function hold_to_settle(cfg, seq, user, now, done, refusals)
  local order = cfg and owned(seq, user)
  if not order then
    return nil, { 'err', 'order_not_found' }
  end
  if order.s == done then
    return nil, { 'ok', redis.call('HGET', KEYS[3], seq) }
  end
  if order.s ~= 'held' then
    return nil, { 'err', refusals[order.s] }
  end
  if now >= order.e then
    end_hold(cfg, order, 'expired', now)
    return nil, { 'err', 'hold_expired' }
  end
  return order
end
