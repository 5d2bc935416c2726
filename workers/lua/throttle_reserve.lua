-- Go now if no one waits and the window allows; else take the next place in the queue.
local at = ready()
if at <= now and tail() <= now then
  return grant()
end
local slot = queue_at(at)
return {slot - now, slot}
