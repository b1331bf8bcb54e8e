-- wrk script: GET the URL with a bearer token on every connection.
--   wrk ... http://127.0.0.1:PORT/v1/uploads/<id>/download -- <bearer token>
-- Counts every response outside 2xx and prints BENCH_NON2XX <n> at the end, as
-- create_upload.lua does, for bench/run.py to check.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  non2xx = 0
  wrk.method = "GET"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  for _, thread in ipairs(threads) do
    total = total + thread:get("non2xx")
  end
  io.write(string.format("BENCH_NON2XX %d\n", total))
end
