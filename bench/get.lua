-- wrk script: every request reads one code (spread over the seeded range) with promocodes/get.
local token = os.getenv("BENCH_TOKEN")
local loyalty_id = os.getenv("BENCH_LOYALTY_ID")
local codes = tonumber(os.getenv("BENCH_CODES"))
local counter = 0

function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. token
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
end

function request()
  local code = string.format("B%07d", math.random(1, codes))
  return wrk.format(nil, wrk.path, nil, '{"loyalty_id":' .. loyalty_id .. ',"code":"' .. code .. '"}')
end

function done(summary, latency, requests)
  io.write(string.format("latency p50 %.2f ms, p99 %.2f ms\n", latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
