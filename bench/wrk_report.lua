-- wrk script of bench/loadgen.py: replays pre-encoded HTTP/1.1 requests, prints one JSON line.
--
-- Script argument (after "--"): a file of requests, each stored as "<byte length>\n<bytes>".
-- One request goes through wrk's static path (no Lua call per request); several are cycled
-- by request(). No response() callback: wrk then skips header and body parsing.

local READY = "loadgen-ready"
local RESULT = "loadgen-result "

local requests = {}
local count = 0
local index = 0

-- bench/loadgen.py passes an address it has already resolved. wrk's own resolve() opens a
-- probe connection and refuses to start when it fails; here a refused connection is counted
-- as a socket error during the run instead, as the asyncio generator does.
function wrk.resolve(host, service)
   wrk.addrs = wrk.lookup(host, service)
end

local function load(path)
   local file = assert(io.open(path, "rb"))
   while true do
      local size = file:read("*l")
      if size == nil then
         break
      end
      count = count + 1
      requests[count] = assert(file:read(tonumber(size)), "truncated request file")
   end
   file:close()
   assert(count > 0, "empty request file")
end

function init(args)
   load(args[1])
   if count == 1 then
      local only = requests[1]
      wrk.format = function()
         return only
      end
      request = nil
   end
   io.stderr:write(READY, "\n")
   io.stderr:flush()
end

function request()
   index = index + 1
   if index > count then
      index = 1
   end
   return requests[index]
end

function done(summary, latency)
   local errors = summary.errors
   io.write(RESULT, string.format(
      '{"requests":%d,"duration_us":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.3f}}\n',
      summary.requests, summary.duration,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean
   ))
   io.stdout:flush()
end
