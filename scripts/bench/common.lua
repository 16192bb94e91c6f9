-- Shared by the queue scenarios (bench-queue.sh prepends it): settings from the
-- environment, counters per thread, one "BENCH {json}" line when wrk ends.
PROJECT = tonumber(os.getenv("PROJECT") or "1")
HEADERS = { ["Content-Type"] = "application/json" }

local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  math.randomseed(os.time() * 100 + (tid or 0))
  counts = { created = 0, claimed = 0, completed = 0, empty = 0, lost = 0, other = 0 }
end

-- Adds n to counter k of this thread.
function count(k, n) counts[k] = counts[k] + (n or 1) end

function done(summary, latency, requests)
  local total = { created = 0, claimed = 0, completed = 0, empty = 0, lost = 0, other = 0 }
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for k in pairs(total) do total[k] = total[k] + (c[k] or 0) end
  end
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format('BENCH {"requests":%d,"duration_s":%.2f,"rps":%.1f,"p50_ms":%.3f,' ..
    '"p99_ms":%.3f,"errors":%d,"non2xx":%d,"created":%d,"claimed":%d,"completed":%d,' ..
    '"empty":%d,"lost":%d,"other":%d,"claimed_per_s":%.1f,"completed_per_s":%.1f}\n',
    summary.requests, secs, summary.requests / secs, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.connect + e.read + e.write + e.timeout, e.status,
    total.created, total.claimed, total.completed, total.empty, total.lost, total.other,
    total.claimed / secs, total.completed / secs))
end
