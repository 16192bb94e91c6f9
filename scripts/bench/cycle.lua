-- Whole task cycles: create, claim (lease token), complete. Each connection is one
-- agent working one task at a time; the thread keeps, per connection slot, the
-- step it is at. wrk gives no connection id, so every response names its step by
-- its body: 201 = created, a body with a lease_token = claimed, "completed" = done.
local create_path = "/projects/" .. PROJECT .. "/tasks"
local claim_path = "/projects/" .. PROJECT .. "/tasks/claim"
local todo = {}   -- (id, token) of claimed tasks waiting for their complete
local n = 0
request = function()
  local t = table.remove(todo)
  if t then
    return wrk.format("POST", "/tasks/" .. t[1] .. "/complete", HEADERS,
      '{"lease_token":"' .. t[2] .. '","result":{"ok":true}}')
  end
  n = n + 1
  if n % 2 == 1 then
    return wrk.format("POST", create_path, HEADERS,
      string.format('{"title":"cycle %d","priority":%d}', n, n % 5))
  end
  return wrk.format("POST", claim_path, HEADERS,
    string.format('{"agent":"agent-%d-%d","lease_seconds":60}', tid, n % 64))
end
response = function(status, headers, body)
  if status == 201 then count("created")
  elseif status == 204 then count("empty")
  elseif status == 409 then count("lost")
  elseif status == 200 then
    local token = string.match(body, '"lease_token":"(%x+)"')
    if token then
      table.insert(todo, { string.match(body, '^{"id":(%d+)'), token })
      count("claimed")
    elseif string.find(body, '"status":"completed"', 1, true) then
      count("completed")
    else count("other") end
  else count("other") end
end
