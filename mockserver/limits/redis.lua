-- Atomic token buckets for mockserver.limits.redis. The arithmetic mirrors bucket.py expression for
-- expression so that the memory and Redis stores give bit-identical answers; change them together.
--
-- One call runs a batch of requests in order, each atomic and each seeing the writes of those before
-- it: the requests of one event-loop pass share a call (an EVALSHA costs Redis more than the work of
-- a small request). Per request:
-- KEYS: one string per bucket, "<level> <updated>" (two %.17g numbers); one MGET reads them all and
--       one SET ... PX writes each, the fewest commands a request can take (each costs ~2.5 µs in a
--       script). A key of another type (the hashes of earlier versions) reads as a full bucket and
--       is replaced on the next write. The batch's KEYS are each request's keys in turn.
-- ARGV: the number of requests, then per request: op ('acquire' | 'peek' | 'adjust'), now (epoch
--       seconds, or '' for the server's TIME), expiry margin in seconds, its number of keys n, then
--       per key: capacity, rate, amount (cost for acquire, delta for adjust, ignored by peek), refund
--       (given back at once when acquire admits; see bucket.Draw).
--       Numbers travel as strings both ways: a Lua number returned to Redis is truncated to an integer.
-- Reply: per request {admitted 0|1, retry_after, limiting 1-based index or 0, never_fits 0|1, level
--        per key}.

local server_now = nil -- TIME, read once per call and only if a request asks for it

local function fmt(x)
  return string.format('%.17g', x)
end

local function run(keys, argv, base)
  local op = argv[base + 1]
  local now = tonumber(argv[base + 2])
  if now == nil then
    if server_now == nil then
      -- Redis 7 replicates scripts by effects, so reading TIME is allowed and replicas agree.
      local t = redis.call('TIME')
      server_now = tonumber(t[1]) + tonumber(t[2]) / 1000000
    end
    now = server_now
  end
  local margin = tonumber(argv[base + 3])
  local n = #keys
  base = base + 4
  local cap, rate, amount, refund, old_level, old_updated, current = {}, {}, {}, {}, {}, {}, {}
  local now_text = nil -- `now` formatted once, on first use: most writes stamp it

  local function level_at(i, t)
    if old_level[i] == nil then
      return cap[i]
    end
    return math.min(cap[i], old_level[i] + rate[i] * math.max(0.0, t - old_updated[i]))
  end

  -- Writes bucket i and returns its level as text, so the reply need not format it again.
  local function store(i, level)
    local text = fmt(level)
    local updated
    if old_updated[i] ~= nil and old_updated[i] > now then
      updated = fmt(old_updated[i])
    else
      if now_text == nil then
        now_text = fmt(now)
      end
      updated = now_text
    end
    -- A key that vanished is a full bucket, so it may go once it would have refilled anyway.
    local ttl = math.max(0.0, (cap[i] - level) / rate[i]) + margin
    redis.call('SET', keys[i], text .. ' ' .. updated, 'PX', math.max(1, math.ceil(ttl * 1000)))
    return text
  end

  local function reply(admitted, wait, limiting, never, texts)
    local out = {admitted, wait, limiting, never}
    for i = 1, n do
      out[4 + i] = texts[i]
    end
    return out
  end

  local function formatted(levels)
    local texts = {}
    for i = 1, n do
      texts[i] = fmt(levels[i])
    end
    return texts
  end

  local stored = redis.call('MGET', unpack(keys))
  for i = 1, n do
    local at = base + (i - 1) * 4
    cap[i] = tonumber(argv[at + 1])
    rate[i] = tonumber(argv[at + 2])
    amount[i] = tonumber(argv[at + 3])
    refund[i] = tonumber(argv[at + 4])
    if stored[i] then
      local l, u = string.match(stored[i], '^(%S+) (%S+)$')
      l, u = tonumber(l), tonumber(u)
      if l ~= nil and u ~= nil then
        old_level[i], old_updated[i] = l, u
      end
    end
    current[i] = level_at(i, now)
  end

  if op == 'peek' then
    return reply(0, '0', 0, 0, formatted(current))
  end

  if op == 'adjust' then
    local texts = {}
    for i = 1, n do
      texts[i] = store(i, math.max(-cap[i], math.min(cap[i], current[i] + amount[i])))
    end
    return reply(1, '0', 0, 0, texts)
  end

  if op ~= 'acquire' then
    return redis.error_reply('unknown bucket op ' .. tostring(op))
  end

  for i = 1, n do
    if amount[i] > cap[i] then
      return reply(0, fmt(math.huge), i, 1, formatted(current))
    end
  end

  local fits = true
  for i = 1, n do
    if amount[i] > current[i] then
      fits = false
    end
  end
  if fits then
    local texts = {}
    for i = 1, n do
      local level = current[i] - amount[i]
      if refund[i] > 0 then
        level = math.max(-cap[i], math.min(cap[i], level + refund[i]))
      end
      texts[i] = store(i, level)
    end
    return reply(1, '0', 0, 0, texts)
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
  return reply(0, fmt(wait), limiting, 0, formatted(current))
end

local replies = {}
local key_at, arg_at = 0, 1
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[arg_at + 4])
  local keys = {}
  for i = 1, n do
    keys[i] = KEYS[key_at + i]
  end
  replies[r] = run(keys, ARGV, arg_at)
  key_at, arg_at = key_at + n, arg_at + 4 + 4 * n
end
return replies
