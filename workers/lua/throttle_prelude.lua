-- The shared throttle's common part (workers/throttle.py), run before each of its scripts.
-- KEYS: [1] the queue's tail (ms: the next waiter's slot), [2] a pause until (ms) the vendor
-- asked for, [3] the calls made (a sorted set: grant times, ms, moved to end times once the
-- calls ended), [4] the vendor's latest reading (a hash: at, limit, remaining, window_at).
-- ARGV: [1] limit, [2] window + margin (ms), [3] a unique member for KEYS[3], [4] the script's
-- own value, [5] the interval (ms), [6] the vendor's window (ms), [7] how long a call may be in
-- flight (ms): a vendor's reading may not count ours granted that long before the call it
-- answered. KEYS[5], KEYS[6] and ARGV[8] to ARGV[12] are the reserves' (throttle_reserves.lua,
-- run after this). Each script returns {wait_ms, slot_ms}, and a granting one the window that
-- parked the call, if a reserve did.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local limit, window, value = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local interval, vendor_window = tonumber(ARGV[5]), tonumber(ARGV[6])
local in_flight = tonumber(ARGV[7])
local pause = tonumber(redis.call('GET', KEYS[2]) or 0)
local keep = math.max(window, vendor_window + in_flight + 1000)
local function freed_at(span, allowed)
  -- when the calls of the last `span` ms drop below `allowed`
  local made = redis.call('ZCOUNT', KEYS[3], now - span, '+inf')
  if made < allowed then return now end
  local oldest = redis.call('ZREVRANGE', KEYS[3], allowed - 1, allowed - 1, 'WITHSCORES')
  return tonumber(oldest[2]) + span
end
local function ready()
  -- the earliest time a call may go, by our log and the vendor's reading, never before a pause
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - keep)
  local at = math.max(now, pause, freed_at(window, limit))
  local seen = redis.call('HMGET', KEYS[4], 'at', 'limit', 'remaining', 'window_at')
  if seen[1] then
    local seen_at = tonumber(seen[1])
    -- a fixed window ends within a window of its first call seen (which may have been granted
    -- up to in_flight before it started); a rolling one holds no more than `limit` of ours
    local turns_over = math.min(seen_at, tonumber(seen[4] or seen_at) + in_flight) + vendor_window
    if seen[2] then at = math.max(at, freed_at(vendor_window + 1000, math.max(tonumber(seen[2]), 1))) end
    if seen[3] and now < turns_over then
      local spent = redis.call('ZCOUNT', KEYS[3], seen_at - in_flight, '+inf')
      if spent >= tonumber(seen[3]) then at = math.max(at, turns_over) end
    end
  end
  return at
end
local function tail()
  return tonumber(redis.call('GET', KEYS[1]) or 0)
end
local function go()
  redis.call('ZADD', KEYS[3], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[3], keep + 1000)
end
local function queue_at(at)
  -- a place in the queue: after the last waiter and when the window allows
  local slot = math.max(tail(), at)
  redis.call('SET', KEYS[1], slot + interval, 'PX', slot + interval - now + 60000)
  return slot
end
