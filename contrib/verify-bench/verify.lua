-- wrk script of contrib/verify-bench.sh: code verifications against taler-otp or privacyIDEA.
--
--   wrk -tT -cC ... -s verify.lua URL -- TARGET MODE CODES THREADS STRIDE [TOKEN INSTANCE]
--
-- TARGET  ours: POST /instances/INSTANCE/private/otp-devices/ID/verifications {"code"[,"price"]}
--               with "Authorization: Bearer TOKEN"
--         pi:   POST /validate/check serial=ID&pass=CODE (privacyIDEA, form body)
-- MODE    correct: every request carries the next unused code of a device, so each one is a
--                  first success; wrong: every request carries the file's fixed wrong code
-- CODES   the file of verify_bench.py make (ID, BASE, codes, "+" for price-bound codes)
-- THREADS wrk's -t: thread k of THREADS owns the devices on lines k, k+THREADS, ... (disjoint)
-- STRIDE  device i of the file starts at counter i*STRIDE (taler-otp; 0 for privacyIDEA)
--
-- Correct codes must reach a device in counter order, one at a time: a later code that overtakes
-- an earlier one makes the earlier a replay. wrk's request() does not say which connection asks,
-- so each thread keeps a queue of devices with no request in flight: request() takes one,
-- response() gives it back once the answer names it, through the matched counter (ours:
-- otp_ctr / STRIDE) or the serial (privacyIDEA). An answer that is not the expected verdict
-- keeps its device out of the queue. A thread whose queue is empty sends a filler request that
-- counts as an error ("starved"); so does running out of codes.
-- done() prints one line: VERIFY responses= ok= bad= starved= ... (bad: not the expected verdict).

local threads = {}
local thread_counter = 0
function setup(thread)
   thread_counter = thread_counter + 1
   thread:set("thread_id", thread_counter)
   table.insert(threads, thread)
end

local target, mode, stride
local ids, bases, codes, priced, index_of_key, line_of = {}, {}, {}, {}, {}, {}
local next_code, in_flight = {}, {}
local ncodes = {}
local heads = {}
local queue, qhead, qtail = {}, 1, 0
local n = 0
local rr = 0
local filler
local skip_verify_call = false

-- Counters read by done() through thread:get (globals of this thread's Lua state).
responses, ok, bad, starved, sent, exhausted = 0, 0, 0, 0, 0, 0

local function price_of(index, counter)
   -- Same formula as price_of in verify_bench.py.
   local value = (index * 37 + counter * 11) % 500 + 1
   local cents = (index * 13 + counter * 7) % 100
   return string.format("KUDOS:%d.%02d", value, cents)
end

local function push(d)
   qtail = qtail + 1
   queue[qtail] = d
end

function init(args)
   target, mode = args[1], args[2]
   local path = args[3]
   local nthreads = tonumber(args[4])
   stride = tonumber(args[5] or "0")
   local token, instance = args[6], args[7] or "bench"
   assert(target == "ours" or target == "pi", "TARGET must be ours or pi")
   assert(mode == "correct" or mode == "wrong", "MODE must be correct or wrong")
   local me = thread_id or 1
   skip_verify_call = (me == 1)  -- wrk calls thread 1's request() once before it starts, unsent
   local headers
   if target == "ours" then
      headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
      filler = wrk.format("GET", "/config")
   else
      headers = { ["Content-Type"] = "application/x-www-form-urlencoded",
                  ["User-Agent"] = "privacyidea-peer-bench/1.0 (wrk)" }
      filler = wrk.format("GET", "/healthz/livez", { ["User-Agent"] = headers["User-Agent"] })
   end
   local line_no = 0
   for line in io.lines(path) do
      if (line_no % nthreads) + 1 == me then
         local id, base, cs, prices = line:match("^([^\t]+)\t(%d+)\t(%d+)\t(%S+)$")
         assert(id, "bad line in " .. path .. ": " .. line)
         n = n + 1
         ids[n], bases[n], codes[n], priced[n] = id, tonumber(base), cs, prices == "+"
         line_of[n] = line_no
         ncodes[n] = #cs / 8
         next_code[n] = 0
         local p
         if target == "ours" then
            p = "/instances/" .. instance .. "/private/otp-devices/" .. id .. "/verifications"
            index_of_key[stride > 0 and math.floor(tonumber(base) / stride) or id] = n
         else
            p = "/validate/check"
            index_of_key[id] = n
         end
         -- wrk.format's request without a body ends with the blank line: keep the headers.
         local r = wrk.format("POST", p, headers)
         heads[n] = r:sub(1, -3) .. "Content-Length: "
         push(n)
      end
      line_no = line_no + 1
   end
   assert(n > 0, "thread " .. me .. " owns no device in " .. path)
end

local function build(d, k)
   local code = codes[d]:sub(k * 8 + 1, k * 8 + 8)
   local body
   if target == "ours" then
      if priced[d] then
         body = '{"code":"' .. code .. '","price":"' .. price_of(line_of[d], bases[d] + k) .. '"}'
      else
         body = '{"code":"' .. code .. '"}'
      end
   else
      body = "serial=" .. ids[d] .. "&pass=" .. code
   end
   return heads[d] .. #body .. "\r\n\r\n" .. body
end

function request()
   if skip_verify_call then
      skip_verify_call = false
      return filler
   end
   if mode == "wrong" then
      rr = rr % n + 1
      sent = sent + 1
      return build(rr, 0)
   end
   if qhead > qtail then
      starved = starved + 1
      return filler
   end
   local d = queue[qhead]
   queue[qhead] = nil
   qhead = qhead + 1
   local k = next_code[d]
   in_flight[d] = k
   sent = sent + 1
   return build(d, k)
end

-- The device a correct-code answer names, if it is the expected success; else nil.
local function answered_device(body)
   if target == "ours" then
      if not body:find('"verified"%s*:%s*true') then return nil end
      local c = tonumber(body:match('"otp_ctr"%s*:%s*(%d+)'))
      if not c then return nil end
      local d = index_of_key[stride > 0 and math.floor(c / stride) or nil]
      if not d or not in_flight[d] then return nil end
      -- otp_ctr is the matched counter (stored + the look-ahead used); accept the stored
      -- counter after the match too (matched + 1), whichever the answer reports.
      local expected = bases[d] + in_flight[d]
      if c ~= expected and c ~= expected + 1 then return nil end
      return d
   else
      if not body:find('"authentication"%s*:%s*"ACCEPT"') then return nil end
      local serial = body:match('"serial"%s*:%s*"([^"]+)"')
      local d = serial and index_of_key[serial]
      if not d or not in_flight[d] then return nil end
      return d
   end
end

local function wrong_rejected(body)
   if target == "ours" then
      return body:find('"verified"%s*:%s*false') and body:find('"reason"%s*:%s*"mismatch"')
   else
      return body:find('"authentication"%s*:%s*"REJECT"')
         and body:find('"message"%s*:%s*"wrong otp value"')
   end
end

function response(status, headers, body)
   responses = responses + 1
   if status ~= 200 then
      bad = bad + 1
      return
   end
   if mode == "wrong" then
      if wrong_rejected(body) then ok = ok + 1 else bad = bad + 1 end
      return
   end
   local d = answered_device(body)
   if not d then
      bad = bad + 1
      return
   end
   ok = ok + 1
   local k = in_flight[d] + 1
   in_flight[d] = nil
   next_code[d] = k
   if k < ncodes[d] then
      push(d)
   else
      exhausted = exhausted + 1
   end
end

-- PACE_MS (environment): each connection waits a random 0 to 2 x PACE_MS after an answer before
-- its next request, like independent tills rather than clients that come straight back.
local pace = tonumber(os.getenv("PACE_MS") or "")
if pace and pace > 0 then
   function delay()
      return math.random(0, 2 * pace)
   end
end

function done(summary, latency, requests)
   local total = { responses = 0, ok = 0, bad = 0, starved = 0, sent = 0, exhausted = 0 }
   for _, t in ipairs(threads) do
      for k, _ in pairs(total) do
         total[k] = total[k] + (t:get(k) or 0)
      end
   end
   io.write(string.format(
      "VERIFY responses=%d ok=%d bad=%d starved=%d sent=%d exhausted_devices=%d\n",
      total.responses, total.ok, total.bad, total.starved, total.sent, total.exhausted))
   -- The tail in more detail than wrk's own distribution (which stops at 99 %), in ms.
   local tail = {}
   for _, p in ipairs({ 90, 95, 98, 99, 99.5, 99.9 }) do
      table.insert(tail, string.format("p%s=%.2f", p, latency:percentile(p) / 1000))
   end
   io.write("TAIL " .. table.concat(tail, " ") .. string.format(" max=%.2f\n", latency.max / 1000))
end
