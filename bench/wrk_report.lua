-- wrk script for bench/run: prints one machine-readable line at the end
-- with the request count, errors and latency percentiles (microseconds).

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
