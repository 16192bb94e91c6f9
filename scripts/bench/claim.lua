-- Agents claim from a pre-filled project and never complete: LIMIT tasks a claim
-- (a batch), or one task with the single-task answer when LIMIT is unset.
local path = "/projects/" .. PROJECT .. "/tasks/claim"
local limit = os.getenv("LIMIT")
local extra = limit and (',"limit":' .. limit) or ""
request = function()
  return wrk.format("POST", path, HEADERS,
    string.format('{"agent":"agent-%d","lease_seconds":3600%s}', math.random(1, 256), extra))
end
response = function(status, headers, body)
  if status == 200 then
    local _, n = string.gsub(body, '"lease_token"', "")
    count("claimed", n)
  elseif status == 204 then count("empty") else count("other") end
end
