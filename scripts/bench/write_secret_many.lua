-- wrk: each request writes a new version of one of 256 secrets (envelope encryption + audit record).
local counter = 0
function request()
  counter = counter + 1
  local body = '{"data":{"PASSWORD":"bench-' .. counter .. '"}}'
  return wrk.format("POST", "/v1/orgs/default/secrets/many" .. (counter % 256) .. "/versions",
    {["Authorization"] = "Bearer " .. os.getenv("TETHER_TOKEN"), ["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  io.write(string.format("p50=%.0fus p99=%.0fus rps=%.0f errors=%d\n", latency:percentile(50), latency:percentile(99),
    summary.requests / (summary.duration / 1e6), summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
