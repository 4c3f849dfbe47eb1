-- wrk: authenticated GET with the token from TETHER_TOKEN (or a Vault token header).
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("TETHER_TOKEN") or "")
if os.getenv("VAULT_TOKEN") then wrk.headers["X-Vault-Token"] = os.getenv("VAULT_TOKEN") end
function done(summary, latency, requests)
  io.write(string.format("p50=%.0fus p99=%.0fus rps=%.0f errors=%d\n", latency:percentile(50), latency:percentile(99),
    summary.requests / (summary.duration / 1e6), summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
