-- Reserves (workers/reserves.py): checked as a call is granted, in the same step, so that
-- workers granting at once each count the others. KEYS: [5] the vendor's daily reading (a hash:
-- at, limit, remaining, and what was learned: turned_at, day_ms), [6] parking (a hash of times,
-- ms, each meaning something until then: `parked:<lane>` that lane is parked, `probe` no probe
-- goes, `daily_parked` work is parked on the day). ARGV: [8] the call's lane (live, retry,
-- catch-up; '': no reserves), [9] its reserve, [10] the live reserve (shares of a window's
-- limit), [11] how often a probe may go while parked on the day (ms), [12] a day (ms): the
-- longest a parking on the day is remembered.
local lane, share, live_share = ARGV[8], tonumber(ARGV[9]), tonumber(ARGV[10])
local probe_every, a_day = tonumber(ARGV[11]), tonumber(ARGV[12])
local LANES = {'live', 'retry', 'catch-up'}

local function holds(name)
  -- whether the parking time `name` is still ahead
  return tonumber(redis.call('HGET', KEYS[6], name) or 0) > now
end

local function left_of(at, remaining)
  -- a reading's remaining count less our calls it may not count: those logged since the call it
  -- answered, which was logged at its end and is among them
  local logged = redis.call('ZCOUNT', KEYS[3], at, '+inf')
  return remaining - math.max(logged - 1, 0)
end

local function until_turn_or_probe(day)
  -- the next probe, or the learned turnover if that comes first
  local wait, turned, length = probe_every, tonumber(day[4]), tonumber(day[5])
  if turned and length and turned + length > now then wait = math.min(wait, turned + length - now + 1000) end
  return math.max(wait, 1000)
end

local function probing(day, limit, left)
  -- whether this call is the account's probe: the highest lane waiting, once per probe interval,
  -- and never into the live reserve once a day's turnover is known and not yet due
  for _, other in ipairs(LANES) do
    if other == lane then break end
    if holds('parked:' .. other) then return false end
  end
  local turned, length = tonumber(day[4]), tonumber(day[5])
  if left <= limit * live_share and turned and length and now < turned + length then return false end
  if holds('probe') then return false end -- a probe (or the first parking) within the interval
  redis.call('HSET', KEYS[6], 'probe', now + probe_every)
  -- the first call a reserve stops starts the clock; the first after it is the probe
  return holds('daily_parked')
end

local function park(window, wait)
  redis.call('HSET', KEYS[6], 'parked:' .. lane, now + wait * 2)
  return {wait, now, window}
end

local function parked()
  -- {wait_ms, now, window} when a window's remaining share is at or under the lane's reserve:
  -- each window the vendor reports, else (catch-up and retry only) the configured one
  if lane == '' then return nil end
  local reported = false
  local minute = redis.call('HMGET', KEYS[4], 'at', 'limit', 'remaining', 'window_at')
  if minute[1] and minute[2] and minute[3] then
    reported = true
    local at, limit = tonumber(minute[1]), tonumber(minute[2])
    if limit > 0 and left_of(at, tonumber(minute[3])) <= limit * share then
      local turns_over = math.min(at, tonumber(minute[4] or at) + in_flight) + vendor_window
      return park('minute', math.max(turns_over - now, 1000))
    end
  end
  local day = redis.call('HMGET', KEYS[5], 'at', 'limit', 'remaining', 'turned_at', 'day_ms')
  if day[2] and day[3] then
    reported = true
    local limit = tonumber(day[2])
    local left = limit > 0 and left_of(tonumber(day[1]), tonumber(day[3]))
    if left and left <= limit * share and not probing(day, limit, left) then
      -- remembered until the day is seen to turn over: the first call after a probe interval is the probe
      redis.call('HSET', KEYS[6], 'daily_parked', now + a_day)
      return park('daily', until_turn_or_probe(day))
    end
  end
  if not reported and lane ~= 'live' then
    -- the configured window is live's own limit: only the lanes below keep a share of it
    local kept = math.floor(limit * share)
    if limit - redis.call('ZCOUNT', KEYS[3], now - window, '+inf') <= limit * share then
      return park('configured', math.max(freed_at(window, limit - kept) - now, 1000))
    end
  end
  redis.call('HDEL', KEYS[6], 'parked:' .. lane)
  return nil
end

local function grant()
  -- the call goes now, unless a reserve parks it: {wait_ms, slot_ms[, window]}
  local stop = parked()
  if stop then return stop end
  go()
  return {0, now}
end

local function learn_day(at, limit, remaining)
  -- keep the daily reading of the answer to the call granted at `at` (the latest grant's wins);
  -- a jump up in the remaining count is the day turning over
  if remaining < 0 then return end
  local seen = redis.call('HMGET', KEYS[5], 'at', 'remaining', 'turned_at')
  if seen[1] and at < tonumber(seen[1]) then return end
  redis.call('HSET', KEYS[5], 'at', at, 'remaining', remaining)
  if limit >= 0 then redis.call('HSET', KEYS[5], 'limit', limit) end
  if seen[2] and remaining > tonumber(seen[2]) then
    redis.call('HSET', KEYS[5], 'turned_at', at)
    if seen[3] then redis.call('HSET', KEYS[5], 'day_ms', at - tonumber(seen[3])) end
    redis.call('HDEL', KEYS[6], 'probe', 'daily_parked')
  end
  -- none left: the guard pauses the account until the probe, so it is parked
  if remaining == 0 then redis.call('HSET', KEYS[6], 'daily_parked', at + a_day, 'probe', at + probe_every) end
end
