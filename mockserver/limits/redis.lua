-- Atomic token buckets for mockserver.limits.redis. The arithmetic mirrors bucket.py expression for
-- expression so that the memory and Redis stores give bit-identical answers; change them together.
--
-- KEYS: one hash {level, updated} per bucket.
-- ARGV: op ('acquire' | 'peek' | 'adjust'), now (epoch seconds, or '' for the server's TIME),
--       expiry margin in seconds, then per key: capacity, rate, amount (cost for acquire, delta for
--       adjust, ignored by peek), refund (given back at once when acquire admits; see bucket.Draw).
--       Numbers travel as strings both ways: a Lua number returned to Redis is truncated to an integer.
-- Reply: {admitted 0|1, retry_after, limiting 1-based index or 0, never_fits 0|1, level per key}.

local op = ARGV[1]
local now = tonumber(ARGV[2])
if now == nil then
  -- Redis 7 replicates scripts by effects, so reading TIME is allowed and replicas agree.
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local margin = tonumber(ARGV[3])
local n = #KEYS

local function fmt(x)
  return string.format('%.17g', x)
end

local cap, rate, amount, refund, old_level, old_updated, current = {}, {}, {}, {}, {}, {}, {}

local function level_at(i, t)
  if old_level[i] == nil then
    return cap[i]
  end
  return math.min(cap[i], old_level[i] + rate[i] * math.max(0.0, t - old_updated[i]))
end

local function store(i, level)
  local updated = now
  if old_updated[i] ~= nil then
    updated = math.max(now, old_updated[i])
  end
  redis.call('HSET', KEYS[i], 'level', fmt(level), 'updated', fmt(updated))
  -- A key that vanished is a full bucket, so it may go once it would have refilled anyway.
  local ttl = math.max(0.0, (cap[i] - level) / rate[i]) + margin
  redis.call('PEXPIRE', KEYS[i], math.ceil(ttl * 1000))
end

local function reply(admitted, wait, limiting, never, levels)
  local out = {admitted, fmt(wait), limiting, never}
  for i = 1, n do
    out[4 + i] = fmt(levels[i])
  end
  return out
end

for i = 1, n do
  local base = 3 + (i - 1) * 4
  cap[i] = tonumber(ARGV[base + 1])
  rate[i] = tonumber(ARGV[base + 2])
  amount[i] = tonumber(ARGV[base + 3])
  refund[i] = tonumber(ARGV[base + 4])
  local h = redis.call('HMGET', KEYS[i], 'level', 'updated')
  local l, u = tonumber(h[1]), tonumber(h[2])
  if l ~= nil and u ~= nil then
    old_level[i], old_updated[i] = l, u
  end
  current[i] = level_at(i, now)
end

if op == 'peek' then
  return reply(0, 0, 0, 0, current)
end

if op == 'adjust' then
  local levels = {}
  for i = 1, n do
    levels[i] = math.max(-cap[i], math.min(cap[i], current[i] + amount[i]))
    store(i, levels[i])
  end
  return reply(1, 0, 0, 0, levels)
end

if op ~= 'acquire' then
  return redis.error_reply('unknown bucket op ' .. tostring(op))
end

for i = 1, n do
  if amount[i] > cap[i] then
    return reply(0, math.huge, i, 1, current)
  end
end

local fits = true
for i = 1, n do
  if amount[i] > current[i] then
    fits = false
  end
end
if fits then
  local levels = {}
  for i = 1, n do
    levels[i] = current[i] - amount[i]
    if refund[i] > 0 then
      levels[i] = math.max(-cap[i], math.min(cap[i], levels[i] + refund[i]))
    end
    store(i, levels[i])
  end
  return reply(1, 0, 0, 0, levels)
end

local wait, limiting = -1.0, 0
for i = 1, n do
  if amount[i] > current[i] then
    local lag = 0.0
    if old_updated[i] ~= nil then
      lag = math.max(0.0, old_updated[i] - now)
    end
    local w = lag + (amount[i] - current[i]) / rate[i]
    if w > wait then
      wait, limiting = w, i
    end
  end
end

-- Same nudge as bucket._exactly_enough: retrying after `wait` must succeed despite rounding.
local step = math.max(wait, math.abs(now), 1.0) * 2 ^ -52
for _ = 1, 200 do
  local t = now + wait
  local ok = true
  for i = 1, n do
    if amount[i] > level_at(i, t) then
      ok = false
    end
  end
  if ok then
    break
  end
  wait = wait + step
  step = step * 2.0
end
return reply(0, wait, limiting, 0, current)
