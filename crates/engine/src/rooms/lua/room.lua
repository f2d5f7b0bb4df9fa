-- One sale's waiting room, changed atomically: the steps of stampede_core::room::Room (which
-- rooms/memory.rs runs in process), held to the same conformance suite.
-- KEYS (one hash tag): 1 room hash, 2 user -> seq, 3 seq -> user, 4 seq -> rank, 5 seq ->
-- admitted at, 6 finished seqs (set), 7 queue (waiting seqs in order), 8 live (admitted seqs
-- not lapsed, in admission order), 9 recent admissions ("at,count" in time order).
-- ARGV: 1 op, 2 now (ms), 3..8 the config (mode, opens_at, starts_at, admit_per_minute,
-- max_active, pass_seconds; empty for ops that never create the room), then the op's own.
-- Room hash: state, shuffled (0/1), count (tickets), next (let in), lapsed, fl (finished among
-- the live), allowance (fractional, %.17g so the pace matches core's f64 bit for bit), paced_at.
-- Every reply starts with '1' when this call created the room (the caller lists it in sales()).
-- The shuffle is SplitMix64, beyond Lua's doubles: a room that is due for it answers
-- 'unshuffled' with its pre-queue length, and the caller sends the order to `shuffle`.

local room, users, who, rank, adm, fin, queue, live, recent =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local op = ARGV[1]
local now = tonumber(ARGV[2])
local mode, opens_at, starts_at = ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local per_minute, max_active, pass_ms = tonumber(ARGV[6]), tonumber(ARGV[7]), (tonumber(ARGV[8]) or 0) * 1000
local RATE_WINDOW_MS = 60000
local created = '0'

local function int(n)
  return string.format('%.0f', n)
end

local function field(name)
  return tonumber(redis.call('HGET', room, name))
end

local function init()
  if redis.call('EXISTS', room) == 1 then
    return
  end
  created = '1'
  local shuffled = '0'
  if mode == 'fifo' then
    shuffled = '1'
  end
  redis.call('HSET', room, 'state', 'open', 'shuffled', shuffled, 'count', 0, 'next', 0, 'lapsed', 0, 'fl', 0,
    'allowance', '0', 'paced_at', int(starts_at))
end

local function shuffle_due()
  return now >= starts_at and redis.call('HGET', room, 'shuffled') == '0'
end

local function reply(...)
  return { created, ... }
end

-- Admitted people still shopping: passes lapse in admission order, so `lapsed` only moves on.
local function active_count()
  local next_seq, lapsed, fl = field('next'), field('lapsed'), field('fl')
  while lapsed < next_seq do
    local seq = redis.call('LINDEX', live, 0)
    if now < tonumber(redis.call('HGET', adm, seq)) + pass_ms then
      break
    end
    fl = fl - redis.call('SISMEMBER', fin, seq)
    redis.call('LPOP', live)
    lapsed = lapsed + 1
  end
  redis.call('HSET', room, 'lapsed', lapsed, 'fl', fl)
  return next_seq - lapsed - fl
end

-- Admissions in the last minute and the oldest remembered, for the measured rate.
local function rate_parts()
  local entries = redis.call('LRANGE', recent, 0, -1)
  local count, front = 0, 0
  for i, entry in ipairs(entries) do
    local at, n = string.match(entry, '^(%-?%d+),(%d+)$')
    at = tonumber(at)
    if i == 1 then
      front = at
    end
    if now - at <= RATE_WINDOW_MS then
      count = count + tonumber(n)
    end
  end
  return int(count), int(front)
end

local function place(seq)
  if redis.call('SISMEMBER', fin, seq) == 1 then
    return { 'finished' }
  end
  local at = redis.call('HGET', adm, seq)
  if at then
    return { 'admitted', at }
  end
  local order_known = redis.call('HGET', room, 'shuffled') == '1' or now >= starts_at
  local ahead = field('count') - field('next') - 1
  if order_known then
    ahead = tonumber(redis.call('HGET', rank, seq)) - field('next')
  end
  local count, front = rate_parts()
  local known = '0'
  if order_known then
    known = '1'
  end
  return { 'waiting', int(math.max(ahead, 0)), known, count, front }
end

local function with_place(head, seq)
  local out = { created }
  for _, value in ipairs(head) do
    out[#out + 1] = value
  end
  for _, value in ipairs(place(seq)) do
    out[#out + 1] = value
  end
  return out
end

-- ARGV[9]: user. Reply: ok, seq, new (1/0), place... | closed | not_open | unshuffled, n.
local function join()
  init()
  local user = ARGV[9]
  local seq = redis.call('HGET', users, user)
  if not seq and redis.call('HGET', room, 'state') == 'closed' then
    return reply('closed')
  end
  if not seq and now < opens_at then
    return reply('not_open')
  end
  if shuffle_due() then
    return reply('unshuffled', redis.call('HGET', room, 'count'))
  end
  if seq then
    return with_place({ 'ok', seq, '0' }, seq)
  end
  seq = redis.call('HGET', room, 'count')
  redis.call('HSET', users, user, seq)
  redis.call('HSET', who, seq, user)
  redis.call('HSET', rank, seq, seq)
  redis.call('RPUSH', queue, seq)
  redis.call('HINCRBY', room, 'count', 1)
  return with_place({ 'ok', seq, '1' }, seq)
end

-- ARGV[9]: seq, ARGV[10]: user. Reply: ok, place... | unknown | unshuffled, n.
local function standing()
  init()
  local seq, user = ARGV[9], ARGV[10]
  if redis.call('HGET', who, seq) ~= user then
    return reply('unknown')
  end
  if shuffle_due() then
    return reply('unshuffled', redis.call('HGET', room, 'count'))
  end
  return with_place({ 'ok' }, seq)
end

local function record_rate(admitted)
  if admitted > 0 then
    redis.call('RPUSH', recent, int(now) .. ',' .. int(admitted))
  end
  while true do
    local first = redis.call('LINDEX', recent, 0)
    if not first or now - tonumber(string.match(first, '^(%-?%d+),')) <= RATE_WINDOW_MS then
      break
    end
    redis.call('LPOP', recent)
  end
end

local function admit_count(buyable, state, allowance)
  local waiting = field('count') - field('next')
  if buyable == 0 then
    return 0
  end
  if state == 'admit_all' then
    return waiting
  end
  local room_left = math.max(max_active - active_count(), 0)
  return math.min(math.floor(allowance), room_left, waiting)
end

-- ARGV[9]: buyable. Reply: ok, users let in... | unshuffled, n.
local function admit()
  init()
  if shuffle_due() then
    return reply('unshuffled', redis.call('HGET', room, 'count'))
  end
  local paced_at = field('paced_at')
  local elapsed = math.max(now - paced_at, 0)
  redis.call('HSET', room, 'paced_at', int(math.max(now, paced_at)))
  local state = redis.call('HGET', room, 'state')
  if now < starts_at or state == 'paused' or state == 'closed' then
    return reply('ok')
  end
  local per_ms = per_minute / 60000.0
  -- Unused pace is kept for at most one second's worth: a quiet minute is no burst later.
  local cap = math.max(per_ms * 1000.0, 1.0)
  local allowance = math.min(tonumber(redis.call('HGET', room, 'allowance')) + per_ms * elapsed, cap)
  local count = admit_count(tonumber(ARGV[9]), state, allowance)
  local out = { created, 'ok' }
  local fl = field('fl')
  for _ = 1, count do
    local seq = redis.call('LPOP', queue)
    redis.call('HSET', adm, seq, int(now))
    redis.call('RPUSH', live, seq)
    -- Left before their turn: let in (the order is kept) but not shopping.
    fl = fl + redis.call('SISMEMBER', fin, seq)
    out[#out + 1] = redis.call('HGET', who, seq)
  end
  redis.call('HSET', room, 'fl', fl, 'allowance', string.format('%.17g', math.max(allowance - count, 0)))
  redis.call('HINCRBY', room, 'next', count)
  record_rate(count)
  return out
end

-- ARGV[9]: user. Frees the user's place if they were shopping; never creates the room.
local function finish()
  local seq = redis.call('HGET', users, ARGV[9])
  if not seq or redis.call('SADD', fin, seq) == 0 then
    return reply('ok')
  end
  local position = tonumber(redis.call('HGET', rank, seq))
  if position >= field('lapsed') and position < field('next') then
    redis.call('HINCRBY', room, 'fl', 1)
  end
  return reply('ok')
end

-- ARGV[9]: open | paused | admit_all | closed.
local function set_state()
  init()
  redis.call('HSET', room, 'state', ARGV[9])
  return reply('ok')
end

-- Reply: ok, state, waiting, active, admitted, recent count, oldest recent.
local function summary()
  init()
  local active = active_count()
  local next_seq = field('next')
  local count, front = rate_parts()
  return reply('ok', redis.call('HGET', room, 'state'), int(field('count') - next_seq), int(active), int(next_seq),
    count, front)
end

-- ARGV[9]: the pre-queue length n the order was computed for, then the n seqs in order. Applied
-- only while the room is unshuffled and still has n tickets (a compare-and-set: every replica
-- computes the same order from the seed, and a join racing in makes the caller recompute).
local function shuffle()
  init()
  if redis.call('HGET', room, 'shuffled') == '1' then
    return reply('ok')
  end
  local n = tonumber(ARGV[9])
  if field('count') ~= n then
    return reply('retry')
  end
  redis.call('DEL', queue)
  for i = 1, n do
    local seq = ARGV[9 + i]
    redis.call('RPUSH', queue, seq)
    redis.call('HSET', rank, seq, i - 1)
  end
  redis.call('HSET', room, 'shuffled', '1')
  return reply('ok')
end

-- ARGV[9]: user. Reply: ok[, seq].
local function ticket_of()
  local seq = redis.call('HGET', users, ARGV[9])
  if seq then
    return reply('ok', seq)
  end
  return reply('ok')
end

if op == 'join' then
  return join()
elseif op == 'standing' then
  return standing()
elseif op == 'admit' then
  return admit()
elseif op == 'finish' then
  return finish()
elseif op == 'state' then
  return set_state()
elseif op == 'summary' then
  return summary()
elseif op == 'shuffle' then
  return shuffle()
elseif op == 'ticket_of' then
  return ticket_of()
end
return redis.error_reply('unknown operation ' .. tostring(op))
