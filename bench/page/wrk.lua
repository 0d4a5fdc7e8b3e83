-- wrk script: cycle over PREFIX LO..HI (wrk ... -s wrk.lua URL -- /authors/ 1 20) and
-- print the summary as one JSON line (latencies in microseconds).
local prefix, lo, hi, i

function init(args)
  prefix = args[1]
  lo = tonumber(args[2])
  hi = tonumber(args[3])
  i = lo
end

function request()
  local path = prefix .. i .. "/"
  i = i + 1
  if i > hi then i = lo end
  return wrk.format("GET", path)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "bytes": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, "p50": %d, ' ..
    '"p90": %d, "p99": %d, "max": %d}}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max))
end
