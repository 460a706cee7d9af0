-- wrk script: every request activates a different, attached code (B0000001, B0000002, ...).
-- Each wrk thread takes its own slice of the code range, so no two requests ask for the same code.
-- Environment: BENCH_TOKEN, BENCH_LOYALTY_ID, BENCH_CODES (how many codes were seeded), BENCH_THREADS.
local token = os.getenv("BENCH_TOKEN")
local loyalty_id = os.getenv("BENCH_LOYALTY_ID")
local codes = tonumber(os.getenv("BENCH_CODES"))
local threads = tonumber(os.getenv("BENCH_THREADS"))
local counter = 0
local next_thread = 0
local all_threads = {}
ok, failed = 0, 0

function setup(thread)
  table.insert(all_threads, thread)
  thread:set("slice", next_thread)
  next_thread = next_thread + 1
end

function init(args)
  slice_size = math.floor(codes / threads)
  first = slice * slice_size
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
end

function request()
  counter = counter + 1
  local code = string.format("B%07d", first + (counter % slice_size) + 1)
  return wrk.format(nil, wrk.path, nil,
    '{"loyalty_id":' .. loyalty_id .. ',"code":"' .. code .. '"}')
end

function response(status, headers, body)
  if status == 200 and string.find(body, '"error":0,', 1, true) then ok = ok + 1 else failed = failed + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_failed = 0, 0
  for _, thread in ipairs(all_threads) do
    total_ok = total_ok + thread:get("ok")
    total_failed = total_failed + thread:get("failed")
  end
  io.write(string.format("activations: %d succeeded, %d refused\n", total_ok, total_failed))
  io.write(string.format("latency p50 %.2f ms, p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
