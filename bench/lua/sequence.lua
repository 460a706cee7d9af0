-- wrk script: every request's body is BENCH_BODY (a Lua format string with one %d) filled with a distinct number
-- of [BENCH_FIRST, BENCH_FIRST + BENCH_COUNT): each wrk thread takes its own slice, so no two requests of a step
-- name the same code or profile. A thread past its slice starts it again; those repeats are refused, and counted.
-- A request counts as ok when the envelope says "error":0. done() prints one line the harness reads (bench/load.py).
local body = os.getenv("BENCH_BODY")
local first = tonumber(os.getenv("BENCH_FIRST"))
local count = tonumber(os.getenv("BENCH_COUNT"))
local threads = tonumber(os.getenv("BENCH_THREADS"))
local counter = 0
local next_slice = 0
local all_threads = {}
ok, refused = 0, 0

function setup(thread)
  table.insert(all_threads, thread)
  thread:set("slice", next_slice)
  next_slice = next_slice + 1
end

function init(args)
  slice_size = math.floor(count / threads)
  start = first + slice * slice_size
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_TOKEN")
end

function request()
  local n = start + (counter % slice_size)
  counter = counter + 1
  return wrk.format(nil, wrk.path, nil, string.format(body, n))
end

function response(status, headers, answer)
  if status == 200 and string.find(answer, '"error":0,', 1, true) then ok = ok + 1 else refused = refused + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_refused = 0, 0
  for _, thread in ipairs(all_threads) do
    total_ok = total_ok + thread:get("ok")
    total_refused = total_refused + thread:get("refused")
  end
  io.write(string.format("BENCH ok=%d refused=%d p50=%.3f p99=%.3f\n", total_ok, total_refused,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
