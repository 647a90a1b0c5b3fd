-- wrk script for bench/run: prints one machine-readable line at the end
-- with the request count, errors and latency percentiles (microseconds).
--
-- With arguments (wrk ... -- FORMAT N STEP), requests go in turn to the
-- Hosts string.format(FORMAT, 0), (FORMAT, STEP), ... N of them: traffic
-- spread over many services.  The requests are built once, in init.

local spread = nil
local next_req = 0

init = function(args)
   if #args < 3 then
      return
   end
   local n, step = tonumber(args[2]), tonumber(args[3])
   spread = {}
   for i = 0, n - 1 do
      local headers = {}
      for k, v in pairs(wrk.headers) do
         headers[k] = v
      end
      headers["Host"] = string.format(args[1], i * step)
      spread[i + 1] = wrk.format(nil, nil, headers)
   end
end

request = function()
   if spread == nil then
      return wrk.request()
   end
   next_req = next_req % #spread + 1
   return spread[next_req]
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
      "\"errors\":{\"connect\":%d,\"read\":%d,\"write\":%d," ..
      "\"status\":%d,\"timeout\":%d}," ..
      "\"mean_us\":%.1f,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d," ..
      "\"p999_us\":%d,\"max_us\":%d}\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency:percentile(99.9), latency.max))
end
