-- Shared by every scenario script: seeded data, per-thread status counters and
-- the machine-readable summary line bench/scenarios.py parses.
--
-- wrk runs one Lua state per thread plus one for setup()/done(); globals are per
-- state. Each thread counts statuses in its own `statuses` table, and done()
-- collects them through the thread objects that setup() kept.
--
-- Data comes from text files (one value per line) in $BENCH_DATA_DIR:
-- slugs.txt, usernames.txt, tokens.txt, written by bench/dataset.py after seeding.

local data_dir = os.getenv("BENCH_DATA_DIR") or "."

local function read_lines(name)
  local values = {}
  local file = io.open(data_dir .. "/" .. name, "r")
  if file then
    for line in file:lines() do
      if #line > 0 then values[#values + 1] = line end
    end
    file:close()
  end
  return values
end

slugs = read_lines("slugs.txt")
usernames = read_lines("usernames.txt")
tokens = read_lines("tokens.txt")

function pick(values)
  return values[math.random(#values)]
end

function auth_headers()
  return { ["Authorization"] = "Token " .. pick(tokens) }
end

function json_headers()
  return { ["Authorization"] = "Token " .. pick(tokens), ["Content-Type"] = "application/json" }
end

local comment_seq = 0
function comment_body()
  comment_seq = comment_seq + 1
  return '{"comment":{"body":"bench comment ' .. thread_id .. "-" .. comment_seq .. '"}}'
end

local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_id", #threads)
end

function init(args)
  statuses = {}
  -- Deterministic per thread, different across threads.
  math.randomseed(42 + (thread_id or 0) * 7919)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local non2xx = 0
  local merged = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("statuses") or {}
    for status, count in pairs(counts) do
      merged[status] = (merged[status] or 0) + count
      if status < 200 or status > 299 then non2xx = non2xx + count end
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    parts[#parts + 1] = string.format('"%d":%d', status, count)
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d},'
      .. '"non2xx":%d,"statuses":{%s},'
      .. '"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max,
    non2xx, table.concat(parts, ","),
    errors.connect, errors.read, errors.write, errors.timeout))
end
