-- wrk script: POST /payments with a fresh correlationId (a version-4-shaped UUID) per request.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local counter = 0
local prefix = string.format("%08x", math.random(0, 0x7fffffff))

request = function()
  counter = counter + 1
  local id = string.format("%s-%04x-4%03x-8%03x-%012x", prefix, math.random(0, 0xffff),
    math.random(0, 0xfff), math.random(0, 0xfff), counter)
  return wrk.format(nil, nil, nil, '{"correlationId":"' .. id .. '","amount":19.90}')
end
