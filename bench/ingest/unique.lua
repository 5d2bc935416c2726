-- wrk: every request a new_referral for a subscriber no earlier request named.
local thread_id = 0
local counter = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

function init(args)
  counter = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["SparkLoop-Token"] = "bench-token"
end

local template = '{"type":"new_referral","campaign_id":"MF6319db9890","subscriber":{"id":"sub_%s","first_name":"Ada","name":"Ada Bench","email":"%s@example.com","referral_code":"c%s","referral_link":"https://mywebsite.com?rh_ref=c%s","referred":true,"tot_referrals":0,"next_reward":2,"created_at":1564400550},"referrer":{"id":"sub_ref%s","first_name":"Bo","name":"Bo Bench","email":"ref%s@example.com","referral_code":"r%s","referral_link":"https://mywebsite.com?rh_ref=r%s","referred":false,"tot_referrals":4,"next_reward":1,"created_at":1564403873}}'

function request()
  counter = counter + 1
  local n = string.format("%d_%d_%d", math.random(1, 1000000000), tid, counter)
  return wrk.format(nil, "/webhooks/sparkloop", nil, string.format(template, n, n, n, n, n, n, n, n))
end
