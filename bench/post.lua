-- wrk script: an urlencoded form post with a getTrace() string, like a landing page sends.
-- WRK_IDEMPOTENCY=1 adds a unique submission_id per request (the front-door benchmark).
local trace = '{"url":"https://shop.example/contact","ref":"https://www.google.com/",' ..
  '"device":{"isMobile":false},"tags":{"ts":1767225600,"list":{"utm_source":"google",' ..
  '"utm_medium":"cpc","utm_campaign":"spring"},"gclid":"Cj0KCQ"},"pages":{"list":' ..
  '[["https://shop.example/",1767225600,"Shop"],["https://shop.example/contact",1767225660,' ..
  '"Contact us"]]},"gid":null}'

local function encode(s)
  return (s:gsub("[^%w%-_%.~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

local counter = 0
local idempotency = os.getenv("WRK_IDEMPOTENCY") == "1"
local thread_id = math.random(1, 1000000000)

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
wrk.headers["Origin"] = "https://shop.example"

request = function()
  counter = counter + 1
  local body = "name=Ann&phone=" .. encode("+49 170 " .. counter) ..
    "&email=ann%40example.com&message=Hello&trace=" .. encode(trace)
  if idempotency then
    body = body .. "&submission_id=" .. thread_id .. "-" .. counter
  end
  return wrk.format(nil, "/forms/contact", nil, body)
end
