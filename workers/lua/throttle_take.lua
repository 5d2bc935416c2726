-- Catch-up work, at its lane's turn: go only when no live caller waits and the window allows;
-- reserves nothing in the live queue.
local at = math.max(ready(), tail())
if at > now then return {at - now, at} end
return grant()
