-- wrk script: POST a body of N bytes (the script's first argument; 65536 by default) to the
-- URL's path, the same bytes on every request. Used by benchmarks/http.py:
--   wrk -t1 -c64 -d5s --latency -s benchmarks/wrk/post.lua http://127.0.0.1:PORT/echo -- 65536

local request_bytes

function init(args)
  local size = tonumber(args[1]) or 65536
  local headers = { ["Content-Type"] = "application/octet-stream" }
  request_bytes = wrk.format("POST", nil, headers, string.rep("x", size))
end

function request()
  return request_bytes
end
