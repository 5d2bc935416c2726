-- value = a reserved slot (ms). Go once it is due and the window allows; else the wait left.
local at = math.max(ready(), value)
if at > now then return {at - now, at} end
return grant()
