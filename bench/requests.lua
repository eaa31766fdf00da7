-- wrk script: replays the requests of a file, one per line: METHOD <tab> PATH [<tab> JSON BODY].
-- Usage: wrk -s bench/requests.lua <url> -- <requests file> [<offset>]
-- Each wrk thread cycles through the whole list from its own offset. done() prints one line,
-- "JSON {...}", with counts, errors and latency percentiles in microseconds.
local requests = {}
local counter = 0

function init(args)
  for line in io.lines(args[1]) do
    local method, path, body = line:match("^(%u+)\t([^\t]*)\t?(.*)$")
    local headers = {["Accept"] = "application/fhir+json"}
    if body == nil or body == "" then
      body = nil
    else
      headers["Content-Type"] = "application/fhir+json"
    end
    requests[#requests + 1] = wrk.format(method, path, headers, body)
  end
  counter = tonumber(args[2] or "0") or 0
end

function request()
  counter = counter + 1
  return requests[(counter % #requests) + 1]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,"read_errors":%d,' ..
    '"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p95_us":%d,' ..
    '"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.mean, latency.max))
end
