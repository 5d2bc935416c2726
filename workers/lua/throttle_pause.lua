-- value = ms. Nothing starts before now + value, reserved slots included (a 429).
if now + value > pause then redis.call('SET', KEYS[2], now + value, 'PX', value + 1000) end
return {value, now + value}
