-- One auction on Redis: the rules of `stampede_core::Auction` (crates/core/src/auction.rs and
-- auction/bidding.rs), step for step and in the same check order, so both backends decide
-- alike. Loaded after sale.lua: a win creates the lot's sale and the winner's hold with its
-- functions, in the same script as the close.
--
-- KEYS: 1-12 the keys of the auction's lot sale (see sale.lua; the auction's stream is the lot
-- sale's stream, KEYS[10]), then, under the same hash tag (the lot sale id):
--  13 auction  hash: cfg (the configuration JSON as created, for the store), title, seller,
--              start, reserve, buy_now, starts, soft, extend, max_ext (-1: none), ladder
--              ("from:increment,..."), payment (seconds); state: ends, ext, price, leader?,
--              lmax, lseq, second?, nbids, version; once ended: o_at, o_reason, o_winner?, o_price
--  14 bids     hash: seq -> bid JSON {a, seq, u, m, t, k, s, p, l}
--  15 bidkeys  hash: idempotency field -> seq
--
-- Stream entries: `A` the auction's whole row (config and state, versioned) after every change,
-- `b` each accepted bid. Money (cents) and times (ms) are integers below 2^53, exact as Lua
-- numbers; they are written with %d, never with tostring (which keeps only 14 digits).

local function int(n)
  return string.format('%d', n)
end

local function optional(value)
  local n = tonumber(value)
  if n and n >= 0 then
    return n
  end
  return nil
end

local function load_auction()
  local f = redis.call('HMGET', KEYS[13], 'seller', 'start', 'reserve', 'buy_now', 'starts', 'soft', 'extend',
    'max_ext', 'ladder', 'ends', 'ext', 'price', 'leader', 'lmax', 'lseq', 'second', 'nbids', 'version',
    'o_reason', 'o_winner', 'payment', 'title')
  if not f[1] then
    return nil
  end
  return {
    seller = f[1], start = tonumber(f[2]), reserve = optional(f[3]), buy_now = optional(f[4]),
    starts = tonumber(f[5]), soft = tonumber(f[6]), extend = tonumber(f[7]), max_ext = optional(f[8]),
    ladder = f[9], ends = tonumber(f[10]), ext = tonumber(f[11]), price = tonumber(f[12]),
    leader = f[13] or nil, lmax = tonumber(f[14]), lseq = tonumber(f[15]), second = tonumber(f[16]),
    nbids = tonumber(f[17]), version = tonumber(f[18]), ended = f[19] ~= false, winner = f[20] or nil,
    payment = tonumber(f[21]), title = f[22],
  }
end

-- Ladder::increment_at: the step with the largest `from <= price` (the first for any lower).
local function increment_at(a, price)
  local increment = nil
  for from, step in string.gmatch(a.ladder, '(%-?%d+):(%d+)') do
    if increment and tonumber(from) > price then
      break
    end
    increment = tonumber(step)
  end
  return increment or 1
end

local function status(a, now)
  if a.ended or now >= a.ends then
    return 'ended'
  elseif now < a.starts then
    return 'scheduled'
  end
  return 'live'
end

local function reserve_met(a)
  if not a.reserve then
    return true
  end
  return a.leader ~= nil and a.lmax >= a.reserve
end

local function min_next_bid(a)
  if not a.leader then
    return a.start
  end
  return a.price + increment_at(a, a.price)
end

-- The leader competes only with themselves: they must raise their own maximum.
local function minimum_for(a, user)
  local next = min_next_bid(a)
  if a.leader == user then
    return math.max(next, a.lmax + 1)
  end
  return next
end

local function buy_now_offered(a, now)
  local bidding_open = not a.leader or (a.reserve ~= nil and not reserve_met(a))
  return status(a, now) == 'live' and a.buy_now ~= nil and bidding_open
end

local function raise_second(a, max)
  if not a.second or max > a.second then
    a.second = max
  end
end

local function proxy_price(a)
  if not a.leader or not a.second then
    return a.start
  end
  local over_second = a.second + increment_at(a, a.second)
  return math.max(math.min(over_second, a.lmax), a.start)
end

local function with_reserve(a, price)
  if a.reserve and a.leader and a.lmax >= a.reserve then
    return math.min(math.max(price, a.reserve), a.lmax)
  end
  return price
end

-- Auction::resolve: one bid applied to the proxy state; the bidder's status after it. Ties go
-- to the earlier bid; a leader raising their own maximum leaves the price where it is.
local function resolve(a, user, max, seq)
  local state, price
  if not a.leader then
    a.leader, a.lmax, a.lseq = user, max, seq
    state, price = 'leading', a.start
  elseif a.leader == user then
    a.lmax = math.max(a.lmax, max)
    state, price = 'leading', a.price
  elseif max > a.lmax then
    raise_second(a, a.lmax)
    a.leader, a.lmax, a.lseq = user, max, seq
    state, price = 'leading', proxy_price(a)
  else
    raise_second(a, max)
    state, price = 'outbid', proxy_price(a)
  end
  a.price = with_reserve(a, price)
  return state
end

-- Soft close: not before the start, only while the cap allows, and counted only if the end
-- actually moved.
local function extend_if_closing(a, now)
  local window = a.soft * 1000
  local started = now >= a.starts
  local closing = a.ends - now <= window
  local allowed = not a.max_ext or a.ext < a.max_ext
  if window == 0 or not started or not closing or not allowed then
    return
  end
  local extended = math.max(a.ends, now + a.extend * 1000)
  if extended > a.ends then
    a.ends = extended
    a.ext = a.ext + 1
  end
end

local function json_text(value)
  if value == nil then
    return 'null'
  end
  return cjson.encode(value)
end

local function bid_json(auction_id, bid)
  return string.format('{"a":%s,"seq":%d,"u":%s,"m":%d,"t":%d,"k":%s,"s":"%s","p":%d,"l":%s}',
    cjson.encode(auction_id), bid.seq, cjson.encode(bid.u), bid.m, bid.t, json_text(bid.k), bid.s, bid.p,
    cjson.encode(bid.l))
end

local function outcome_json(o)
  if not o then
    return 'null'
  end
  return string.format('{"at":%d,"r":"%s","w":%s,"p":%d}', o.at, o.r, json_text(o.w), o.p)
end

-- Writes the state and puts the whole row on the stream (the store keeps the newest version).
local function save_state(auction_id, a)
  redis.call('HSET', KEYS[13], 'ends', int(a.ends), 'ext', a.ext, 'price', int(a.price), 'nbids', a.nbids,
    'version', a.version)
  if a.leader then
    redis.call('HSET', KEYS[13], 'leader', a.leader, 'lmax', int(a.lmax), 'lseq', a.lseq)
  end
  if a.second then
    redis.call('HSET', KEYS[13], 'second', int(a.second))
  end
  local o = a.outcome
  if o then
    redis.call('HSET', KEYS[13], 'o_at', int(o.at), 'o_reason', o.r, 'o_price', int(o.p))
    if o.w then
      redis.call('HSET', KEYS[13], 'o_winner', o.w)
    end
  end
  local row = string.format('{"a":%s,"cfg":%s,"ends":%d,"ext":%d,"price":%d,"leader":%s,"n":%d,"v":%d,"o":%s}',
    cjson.encode(auction_id), redis.call('HGET', KEYS[13], 'cfg'), a.ends, a.ext, a.price, json_text(a.leader),
    a.nbids, a.version, outcome_json(o))
  redis.call('XADD', KEYS[10], '*', 't', 'A', 'j', row)
end

local function finish(a, outcome)
  a.outcome = outcome
  a.ended = true
  a.version = a.version + 1
end

-- The feed: the auction changed, and its leader before the step, if the step displaced them
-- (the winner counts as the leader once the auction ended).
local function announce_auction(auction_id, a, leader_before)
  note('a', auction_id)
  local leader_now = a.leader
  if a.outcome and a.outcome.w then
    leader_now = a.outcome.w
  end
  if leader_before and leader_before ~= leader_now then
    note('x', leader_before)
  end
end

-- The winner's order: the lot becomes a one-unit sale held for the winner (order seq 0), open
-- only for the payment window, so nobody else can buy the unit if the hold runs out.
local function settle(a, now)
  local o = a.outcome
  local hold_ms = a.payment * 1000
  local starts, ends = math.min(now, o.at), now + hold_ms
  if not o.w or now >= ends then
    return
  end
  local sale_id = string.gsub(string.match(KEYS[1], '{([^{}]*)}:[^:]*$'), '%.%d+$', '')
  redis.call('HSET', KEYS[1], 'stock', 1, 'limit', 1, 'hold_ms', int(hold_ms), 'starts', int(starts), 'ends',
    int(ends), 'name', a.title, 'price', int(o.p), 'created', int(now), 'buckets', 1, 'bucket', 0)
  redis.call('HSET', KEYS[2], 'available', 1, 'held', 0, 'sold', 0, 'seq', 0, 'waiting', 0, 'wl_len', 0,
    'wl_head', 0, 'cancelled', 0, 'expired', 0, 'lent', 0)
  local sale = string.format(
    '{"id":%s,"name":%s,"stock":1,"price":%d,"limit":1,"hold_ms":%d,"starts":%d,"ends":%d,"created":%d,"buckets":1}',
    cjson.encode(sale_id), cjson.encode(a.title), o.p, hold_ms, starts, ends, now)
  redis.call('XADD', KEYS[10], '*', 't', 's', 'j', sale)
  create_hold(config(), o.w, 1, nil, nil, now)
  note('w', o.w)
end
