-- A call finished (answered, or failed on the way): its entry in the log moves from its grant
-- time to now, when the vendor has surely counted it, so the log never places a call earlier
-- than the vendor saw it arrive. value = its grant time (ms); ARGV[3] its member; ARGV[13] the
-- answer's s-ratelimit-limit, ARGV[14] its -remaining, ARGV[15] and ARGV[16] its daily ones
-- (-1: not sent). The latest call's reading wins. `window_at`: the first call seen in the
-- vendor's current window (its count went up since the reading before: the window turned over),
-- so a fixed window is known to end within a window of it.
redis.call('ZADD', KEYS[3], 'XX', now, ARGV[3])
learn_day(value, tonumber(ARGV[15]), tonumber(ARGV[16]))
local limit_said, remaining = tonumber(ARGV[13]), tonumber(ARGV[14])
if limit_said < 0 and remaining < 0 then return {0, value} end
local seen = redis.call('HMGET', KEYS[4], 'at', 'remaining', 'window_at')
local seen_at = tonumber(seen[1] or -1)
if value < seen_at then return {0, seen_at} end
local window_at = tonumber(seen[3] or value)
if remaining >= 0 and (seen[2] == false or remaining > tonumber(seen[2])) then window_at = value end
redis.call('DEL', KEYS[4])
redis.call('HSET', KEYS[4], 'at', value, 'window_at', window_at)
if limit_said >= 0 then redis.call('HSET', KEYS[4], 'limit', limit_said) end
if remaining >= 0 then redis.call('HSET', KEYS[4], 'remaining', remaining) end
redis.call('PEXPIRE', KEYS[4], vendor_window * 2 + 10000)
return {0, value}
