-- wrk: each request writes a new variable (a resource write with its audit version).
local counter = 0
function setup(thread)
  thread:set("tid", tostring(math.random(1, 1000000000)))
end
function request()
  counter = counter + 1
  local name = "V" .. tid .. "_" .. counter
  local body = '{"metadata":{"name":"' .. name .. '"},"spec":{"value":"bench"}}'
  return wrk.format("PUT", "/v1/orgs/default/variables/" .. name,
    {["Authorization"] = "Bearer " .. os.getenv("TETHER_TOKEN"), ["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  io.write(string.format("p50=%.0fus p99=%.0fus rps=%.0f errors=%d\n", latency:percentile(50), latency:percentile(99),
    summary.requests / (summary.duration / 1e6), summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
