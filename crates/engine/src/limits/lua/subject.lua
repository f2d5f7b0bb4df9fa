-- One subject's limits state (a user, an IP or a sale) in one hash, changed atomically: the
-- steps of limits/window.rs and limits/memory.rs, which the conformance suite holds both to
-- (and, as `spend`, a single-use token).
-- KEYS[1]: the subject's hash. ARGV[1]: the operation; ARGV[2]: now (ms); the rest below.
-- Fields: t = GCRA theoretical arrival time (µs); l = the latest time a request was allowed
-- at (ms; an older `now` counts as it, window.rs: Gcra::step); w = the window ring as "newest r0..r9 x0..x9"
-- (requests, then refused requests, per bucket slot); u = ban until (ms); m = ban reason.
-- Numbers are written with %.0f: tostring would round 16-digit microsecond times.

local BUCKETS = 10
local key = KEYS[1]
local op = ARGV[1]
local now = tonumber(ARGV[2])

local function int(n)
  return string.format('%.0f', n)
end

local function slot(bucket)
  return bucket % BUCKETS
end

local function fresh_window(bucket)
  local window = { newest = bucket, requests = {}, refused = {} }
  for i = 0, BUCKETS - 1 do
    window.requests[i] = 0
    window.refused[i] = 0
  end
  return window
end

local function read_window(text, bucket)
  if not text then
    return fresh_window(bucket)
  end
  local values = {}
  for n in string.gmatch(text, '%-?%d+') do
    values[#values + 1] = tonumber(n)
  end
  local window = { newest = values[1], requests = {}, refused = {} }
  for i = 0, BUCKETS - 1 do
    window.requests[i] = values[2 + i]
    window.refused[i] = values[2 + BUCKETS + i]
  end
  return window
end

local function write_window(window)
  local parts = { int(window.newest) }
  for i = 0, BUCKETS - 1 do
    parts[#parts + 1] = int(window.requests[i])
  end
  for i = 0, BUCKETS - 1 do
    parts[#parts + 1] = int(window.refused[i])
  end
  return table.concat(parts, ' ')
end

-- Moves the ring on to `bucket`; a bucket older than the newest counts in the newest.
local function advance(window, bucket)
  if bucket - window.newest >= BUCKETS then
    window = fresh_window(bucket)
  end
  while window.newest < bucket do
    window.newest = window.newest + 1
    window.requests[slot(window.newest)] = 0
    window.refused[slot(window.newest)] = 0
  end
  return window, slot(window.newest)
end

local function totals(window, bucket)
  local age = math.max(bucket - window.newest, 0)
  local requests, refused = 0, 0
  for back = 0, BUCKETS - age - 1 do
    requests = requests + window.requests[slot(window.newest - back)]
    refused = refused + window.refused[slot(window.newest - back)]
  end
  return requests, refused
end

-- The hash lives while any part of it still matters: the window, the GCRA state, the ban.
local function keep(window_ms, tat_us, until_ms)
  local ttl = window_ms
  if tat_us then
    ttl = math.max(ttl, math.ceil(tat_us / 1000) - now)
  end
  if until_ms then
    ttl = math.max(ttl, until_ms - now)
  end
  redis.call('PEXPIRE', key, int(ttl + 1000))
end

-- ARGV: interval_us, tolerance_us (interval 0: no GCRA), bucket_ms (0: no window, for sales),
-- threshold (0: no automatic ban), ban_ms, reason, window_ms.
-- Reply: {'allowed'} | {'banned', until, reason, new (1/0)} | {'limited', retry_after_us}.
local function admit()
  local interval, tolerance = tonumber(ARGV[3]), tonumber(ARGV[4])
  local bucket_ms, threshold = tonumber(ARGV[5]), tonumber(ARGV[6])
  local ban_ms, reason, window_ms = tonumber(ARGV[7]), ARGV[8], tonumber(ARGV[9])
  local state = redis.call('HMGET', key, 't', 'w', 'u', 'm', 'l')
  local tat, until_ms = tonumber(state[1]), tonumber(state[3])
  local window, bucket, here = nil, 0, 0
  if bucket_ms > 0 then
    bucket = math.floor(now / bucket_ms)
    window = read_window(state[2], bucket)
  end
  local function refuse(reply)
    if window then
      window, here = advance(window, bucket)
      window.refused[here] = window.refused[here] + 1
      redis.call('HSET', key, 'w', write_window(window))
    end
    keep(window_ms, tat, until_ms)
    return reply
  end
  if until_ms and until_ms > now then
    return refuse({ 'banned', int(until_ms), state[4] or '', '0' })
  end
  if window then
    window, here = advance(window, bucket)
    window.requests[here] = window.requests[here] + 1
    if threshold > 0 and totals(window, bucket) > threshold then
      until_ms = now + ban_ms
      redis.call('HSET', key, 'u', int(until_ms), 'm', reason)
      -- The ban settles the requests counted so far (window.rs: forgive_requests).
      for i = 0, BUCKETS - 1 do
        window.requests[i] = 0
      end
      return refuse({ 'banned', int(until_ms), reason, '1' })
    end
  end
  if interval > 0 then
    local latest = math.max(now, tonumber(state[5]) or now)
    local now_us = latest * 1000
    local next_tat = math.max(tat or now_us, now_us) + interval
    local excess = next_tat - now_us - tolerance
    if excess > 0 then
      return refuse({ 'limited', int(excess) })
    end
    tat = next_tat
    redis.call('HSET', key, 't', int(tat), 'l', int(latest))
  end
  if window then
    redis.call('HSET', key, 'w', write_window(window))
  end
  keep(window_ms, tat, until_ms)
  return { 'allowed' }
end

-- ARGV: until, reason, window_ms. Replaces the subject's ban.
local function ban()
  local until_ms, reason, window_ms = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
  redis.call('HSET', key, 'u', int(until_ms), 'm', reason)
  keep(window_ms, tonumber(redis.call('HGET', key, 't')), until_ms)
  return { 'ok' }
end

-- Reply: {'1'} when a ban was in force.
local function lift()
  local state = redis.call('HMGET', key, 'u', 'w')
  local until_ms = tonumber(state[1])
  redis.call('HDEL', key, 'u', 'm')
  if state[2] then
    -- Forgive the counted requests, as a ban does, keeping the refusals (window.rs).
    local window = read_window(state[2], 0)
    for i = 0, BUCKETS - 1 do
      window.requests[i] = 0
    end
    redis.call('HSET', key, 'w', write_window(window))
  end
  if until_ms and until_ms > now then
    return { '1' }
  end
  return { '0' }
end

-- ARGV: bucket_ms. Reply: {until (0: no ban in force), reason, requests, refused}; read only.
local function peek()
  local state = redis.call('HMGET', key, 'w', 'u', 'm')
  local bucket = math.floor(now / tonumber(ARGV[3]))
  local requests, refused = 0, 0
  if state[1] then
    requests, refused = totals(read_window(state[1], bucket), bucket)
  end
  local until_ms = tonumber(state[2])
  if not until_ms or until_ms <= now then
    return { '0', '', int(requests), int(refused) }
  end
  return { int(until_ms), state[3] or '', int(requests), int(refused) }
end

-- KEYS[1] here is a token's own string key. ARGV: expires_at. Reply: {'1'} when spent now.
-- The expiry is compared with `now` like every other time here; the TTL only frees memory.
local function spend()
  local until_ms = tonumber(redis.call('GET', key))
  if until_ms and until_ms > now then
    return { '0' }
  end
  local expires_at = tonumber(ARGV[3])
  redis.call('SET', key, int(expires_at), 'PX', int(expires_at - now + 1000))
  return { '1' }
end

if op == 'admit' then
  return admit()
elseif op == 'ban' then
  return ban()
elseif op == 'lift' then
  return lift()
elseif op == 'peek' then
  return peek()
elseif op == 'spend' then
  return spend()
end
return redis.error_reply('unknown operation ' .. tostring(op))
